"""One ``osreco learn`` run: logged traffic since the last run -> popularity and CF, the position
model, IPW training data, tuned fusion weights -> evaluated, promoted or refused, recorded.

Order (promotion last, so a run killed or failing anywhere before it changes nothing served):

1. read the events and query-log documents since the state's watermark (and a window of
   ``window_days`` for the position model and the tuning), forgotten users dropped;
2. fit the position model (:mod:`osreco.learning.propensity`) on impressions and clicks;
3. build IPW click/skip training rows (:mod:`osreco.learning.clicks`) from the new searches and
   write them to ``<state>/training/<run>.jsonl``; they stay pending until at least
   ``min_new_pairs`` pairs have arrived since the last fine-tune;
4. tune the fusion weights per query class (:mod:`osreco.learning.tune`) on validation users,
   compared with the served weights on held-out users;
5. plan the CF update (:mod:`osreco.learning.cf_step`): fold-in, or a gated full retrain;
6. promote: CF (model files by atomic replace, factors, popularity), then the fusion weights
   into the settings store (:mod:`osreco.plugin.settings_store`); then, when fine-tuning is due
   and configured (``finetune``), the encoder and the reranker trained on the pending rows,
   each gated and promoted on its own (:mod:`osreco.learning.finetune`); then move the watermark;
7. append the run to ``<state>/history.jsonl`` and redraw ``<state>/history.png``.

The state folder holds ``state.json`` (``watermark``, ``runs``, ``last_full_run``, the ``pending``
training files and pairs), written by atomic replace after a successful run only: a killed run
is redone from the same watermark.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch

from osreco.cf import store as cf_store
from osreco.cf.forget import forgotten_keys
from osreco.cf.model import CFConfig, CFModel
from osreco.learning import cf_step
from osreco.learning.clicks import clicked_by_query, position_model, shown_requests, training_rows
from osreco.learning.errors import LearnError
from osreco.learning.finetune import FinetuneConfig, read_rows, run_finetune
from osreco.learning.history import CHART_FILE, append_run, draw_history, read_history
from osreco.learning.logs import iso, parse_time, read_events, read_queries
from osreco.learning.tune import LoggedRequest, tune
from osreco.plugin.fusion import FusionSettings
from osreco.plugin.settings_store import class_weights, read_fusion, write_fusion

__all__ = ["LearnConfig", "run_learn", "load_state", "hand_weights_from_env", "STATE_FILE"]

STATE_FILE = "state.json"
SEARCH_CLASSES = ("listing", "text", "title")


@dataclass(frozen=True)
class LearnConfig:
    """What one run reads and where it writes.

    Args:
        index: the item index (alias) the sidecar serves.
        state_dir: watermark, history, chart and training rows.
        prefix: prefix of the events, queries, users and settings indexes (default ``index``).
        model_dir: the served CF model folder (``OSRECO_CF_MODEL``); None = popularity and the
            stored vectors only, no model file.
        full: retrain CF in full this run; ``full_every``: also every N-th run (0 = never by count).
        window_days: how far back the position model and the tuning look.
        min_new_pairs: fine-tuning is due when this many click/skip pairs arrived since the last one.
        finetune: how to fine-tune, gate and promote the encoder and the reranker when due
            (None: the run only reports that it is due and how long it would take).
        classes: the query classes whose weights are tuned and promoted.
        hand: the hand weights (the sidecar's configured fusion) a class falls back to.
        until: the end of this run's data (ISO; default now). ``now`` is for tests and the simulator.
        min_requests, min_clicks: per class and slice, the least traffic tuning acts on.
        finetune_pairs_per_s, finetune_epochs: how the run estimates the time fine-tuning would
            add (the encoder on the click rows plus the reranker on all rows, each for this many
            epochs at this throughput; see docs/benchmarks.md for this machine's).
    """

    index: str
    state_dir: str
    prefix: str | None = None
    model_dir: str | None = None
    full: bool = False
    full_every: int = 7
    window_days: float = 7.0
    min_new_pairs: int = 1000
    classes: tuple[str, ...] = SEARCH_CLASSES
    hand: FusionSettings = field(default_factory=FusionSettings)
    until: str | None = None
    min_requests: int = 20
    min_clicks: int = 5
    neighbors: int = 50
    opensearch: Any = None
    finetune_pairs_per_s: float = 15.0
    finetune_epochs: int = 1
    finetune: FinetuneConfig | None = None

    @classmethod
    def from_env(cls, *, alias: str, state_dir: str | Path, cf_model_dir: str | Path | None = None,
                 opensearch: Any = None, **kwargs: Any) -> LearnConfig:
        """A config over the sidecar's settings: its hand weights from the ``OSRECO_*`` environment
        (the defaults when they do not parse), ``alias`` and ``cf_model_dir`` as the sidecar serves them.

        Args:
            opensearch: an ``osreco.ingest.connection.OpenSearchConfig`` (default: from the environment).
            kwargs: any other field of this class.
        """
        return cls(index=alias, state_dir=str(state_dir), model_dir=str(cf_model_dir) if cf_model_dir else None,
                   opensearch=opensearch, **{"hand": hand_weights_from_env(), **kwargs})

    @property
    def store_prefix(self) -> str:
        return self.prefix or self.index


def hand_weights_from_env() -> FusionSettings:
    """The sidecar's configured fusion (its ``OSRECO_*`` weights), the defaults when they do not parse.

    Only the weights are read: the sidecar's files (bundle, keys, CF model) are not needed here.
    """
    from osreco.errors import OsrecoError
    from osreco.plugin.config import SidecarConfig

    try:
        return SidecarConfig.from_env(dev_mode=True, api_keys_file=None, bundle_dir=None, cf_model_dir=None,
                                      rerank_bundle=None).fusion
    except (OsrecoError, TypeError, ValueError):
        return FusionSettings()


def load_state(state_dir: str | Path) -> dict[str, Any]:
    """``state.json`` (empty before the first run).

    Raises:
        LearnError: the file is not a JSON object.
    """
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return {"watermark": None, "runs": 0, "last_full_run": None, "pending": {"files": [], "pairs": 0}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LearnError(f"learn state {path} is not valid JSON: {e}", file=str(path),
                         fix="delete it to start over from all stored traffic") from e
    if not isinstance(state, dict):
        raise LearnError(f"learn state {path} is not a JSON object", file=str(path), fix="delete it to start over")
    return state


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _connect(settings: Any = None) -> OpenSearch:
    from osreco.ingest.connection import OpenSearchConfig, connect

    return connect(settings if settings is not None else OpenSearchConfig.from_env())


def served_weights(client: OpenSearch, prefix: str, hand: FusionSettings,
                   classes: tuple[str, ...]) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None]:
    """The weights the sidecar serves per class: the settings store's, else the hand weights."""
    doc = read_fusion(client, prefix)
    stored = (doc or {}).get("classes", {})
    return {c: {**class_weights(hand, c), **stored.get(c, {})} for c in classes}, doc


def run_learn(config: LearnConfig, client: OpenSearch | None = None) -> dict[str, Any]:
    """One learn run (see the module docstring); returns the history record it appended.

    Raises:
        LearnError: a bad state file; any error of a step is recorded in the history (nothing
            promoted, the watermark kept) and raised again.
    """
    client = client or _connect(config.opensearch)
    state_dir = Path(config.state_dir)
    state = load_state(state_dir)
    run_id = uuid.uuid4().hex[:16]
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    until_t = parse_time(config.until) if config.until else now
    since = state.get("watermark")
    until = iso(until_t)
    window = iso(until_t - timedelta(days=config.window_days))
    run_no = int(state.get("runs", 0)) + 1
    record: dict[str, Any] = {"run_id": run_id, "started": iso(now), "since": since, "until": until,
                              "promoted": [], "refused": [], "changes": [], "metrics": {}, "data": {}}
    try:
        pending = _run(client, config, record, since, until, window, run_no, state)
    except Exception as e:
        record.update(error=f"{type(e).__name__}: {e}", ended=iso(datetime.now(timezone.utc)),
                      seconds=round(time.perf_counter() - t0, 2), promoted=[])
        append_run(state_dir, record)
        raise
    record.update(ended=iso(datetime.now(timezone.utc)), seconds=round(time.perf_counter() - t0, 2))
    record.update(_headline(record))
    _write_json(state_dir / STATE_FILE, {
        "watermark": until, "runs": run_no, "last_run": run_id,
        "last_full_run": run_no if (record["metrics"].get("cf") or {}).get("mode") == "full"
        and "cf" in record["promoted"] else state.get("last_full_run"), "pending": pending})
    append_run(state_dir, record)
    try:
        record["chart"] = str(draw_history(read_history(state_dir), state_dir / CHART_FILE))
    except Exception as e:  # the chart is a convenience: a plotting failure does not fail the run
        record["chart_error"] = f"{type(e).__name__}: {e}"
    return record


def _run(client: OpenSearch, config: LearnConfig, record: dict[str, Any], since: str | None, until: str,
         window: str, run_no: int, state: dict[str, Any]) -> dict[str, Any]:
    """The steps of one run (module docstring); returns the training data still pending."""
    prefix = config.store_prefix
    # 1. data: the window (position model, tuning) and what is new since the watermark
    start = window if since is None or window < since else since
    events = read_events(client, prefix, start, until)
    queries = read_queries(client, prefix, start, until)
    new_events = [e for e in events if since is None or _after(e, since)]
    new_queries = [q for q in queries if since is None or _after(q, since)]
    all_events = read_events(client, prefix, None, until, kinds=cf_step.TRAIN_KINDS)
    record["data"] = {"events": len(new_events), "queries": len(new_queries),
                      "users": len({e.get("user_key") for e in new_events} | {q.get("user_key") for q in new_queries}
                                   - {None, ""}),
                      "window_events": len(events), "window_queries": len(queries), "all_events": len(all_events)}
    # 2. position model
    requests = shown_requests(queries, events)
    model = position_model(requests)
    record["metrics"]["propensity"] = model.as_dict()
    # 3. IPW training data from the new searches
    rows, pairs = training_rows([r for r in requests if since is None or _after({"timestamp": r.timestamp}, since)],
                                model)
    before = state.get("pending") or {"files": [], "pairs": 0}
    files: list[str] = [str(f) for f in before.get("files") or []]
    pending: dict[str, Any] = {"files": files, "pairs": int(before.get("pairs") or 0) + pairs}
    fine: dict[str, Any] = {"pairs": pairs, "rows": len(rows), "min_new_pairs": config.min_new_pairs,
                            "pending_pairs": pending["pairs"], "due": pending["pairs"] >= config.min_new_pairs}
    if rows:
        path = Path(config.state_dir) / "training" / f"{record['run_id']}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)
        fine["file"] = str(path)
        files.append(str(path))
    clicks_rows = sum(1 for r in rows if r["kind"] == "click")
    fine["would_add_s"] = round((clicks_rows + len(rows)) * config.finetune_epochs
                                / max(config.finetune_pairs_per_s, 1e-9))
    fine["note"] = (("due: fine-tuning the encoder and the reranker" if config.finetune else
                     f"due ({pending['pairs']} pairs): pass --finetune (or run `osreco train encoder|reranker "
                     f"--events FILE` and gate with `osreco promote`); about {fine['would_add_s']} s")
                    if fine["due"] else f"skipped: {pending['pairs']} pending pairs < {config.min_new_pairs}; "
                    f"it would add about {fine['would_add_s']} s")
    record["metrics"]["finetune"] = fine
    # 4. fusion tuning
    current, doc = served_weights(client, prefix, config.hand, config.classes)
    clicks = clicked_by_query(events)
    logged = [r for r in (LoggedRequest.from_log(q, clicks.get(str(q.get("query_id")), set())) for q in queries)
              if r is not None]
    hand = {c: class_weights(config.hand, c) for c in config.classes}
    results = tune(logged, current, model, hand, min_requests=config.min_requests, min_clicks=config.min_clicks)
    record["metrics"]["fusion"] = {"version": (doc or {}).get("version"),
                                   "classes": {c: r.as_dict() for c, r in results.items()}}
    # 5. CF plan
    store = cf_store.StoreConfig(prefix=prefix, item_index=config.index)
    item_ids = sorted(cf_store.indexed_item_ids(client, config.index))
    current_cf = _load_model(config.model_dir)
    last_full = state.get("last_full_run")
    full = config.full or current_cf is None or (config.full_every > 0 and (
        last_full is None or run_no - int(last_full) >= config.full_every))
    cf_config = CFConfig(factors=cf_store.item_cf_dim(client, config.index) or CFConfig().factors)
    plan = cf_step.plan_cf(all_events, new_events, current_cf, item_ids, full, cf_config)
    record["metrics"]["cf"] = plan.as_dict()
    # 6. promote, last
    if plan.promote:
        record["metrics"]["cf"]["written"] = cf_step.promote_cf(client, store, plan, config.model_dir,
                                                                record["run_id"], item_ids, config.neighbors)
        record["promoted"].append("cf")
        record["changes"].append(f"cf {plan.mode}: {plan.reason}")
    else:
        record["refused"].append({"what": "cf", "reason": plan.reason})
    if plan.mode == "popularity" or not plan.promote:   # popularity is refreshed even without a model
        record["metrics"]["cf"]["popularity"] = cf_step.promote_cf(
            client, store, cf_step.CFPlan("popularity", None, plan.interactions, promote=False), None,
            record["run_id"], item_ids) if plan.interactions else None
    promote = {c: r.tuned for c, r in results.items() if r.promote}
    for c, r in results.items():
        if not r.promote and r.tuned:
            record["refused"].append({"what": f"fusion.{c}", "reason": r.reason})
    if promote:
        stored = dict((doc or {}).get("classes", {}))
        stored.update(promote)
        written = write_fusion(client, prefix, stored, f"osreco learn run {record['run_id']}")
        record["promoted"].append("fusion")
        record["changes"].append(f"fusion weights version {written['version']}: " + ", ".join(
            f"{c} {results[c].reason}" for c in promote))
    if fine["due"] and config.finetune is not None:
        gone = forgotten_keys(client, prefix)   # users forgotten since their rows were written
        rows = [r for r in read_rows(files) if r.get("user_id") not in gone]
        done = run_finetune(config.finetune, rows, Path(config.state_dir), record["run_id"], client)
        fine.update({k: v for k, v in done.items() if k not in ("promoted", "refused")})
        for step in done["promoted"]:
            record["promoted"].append(step["what"])
            record["changes"].append(f"{step['what']} fine-tuned on {done['train_rows']} rows: {step['reason']}")
        record["refused"].extend(done["refused"])
        pending = {"files": [], "pairs": 0}
    return pending


def _headline(record: dict[str, Any]) -> dict[str, Any]:
    """The numbers a caller reads first: the position curve, held-out IPS clicks per request of the
    served (``current``) and ``tuned`` weights summed over the classes tuned, and the CF mode."""
    metrics = record["metrics"]
    classes = [c for c in (metrics.get("fusion") or {}).get("classes", {}).values() if c.get("heldout")]
    fusion = {"current": round(sum(c["heldout"]["current"] for c in classes), 5),
              "tuned": round(sum(c["heldout"]["tuned"] for c in classes), 5),
              "hand": round(sum(c["heldout"].get("hand", 0.0) for c in classes), 5),
              "classes": [c["query_class"] for c in classes]} if classes else None
    return {"propensity": metrics.get("propensity"), "fusion": fusion, "cf": (metrics.get("cf") or {}).get("mode")}


def _after(doc: dict[str, Any], since: str) -> bool:
    """Whether ``doc`` is at or after the watermark (windows are half-open: ``[since, until)``)."""
    ts = doc.get("timestamp")
    return ts is not None and parse_time(ts) >= parse_time(since)


def _load_model(model_dir: str | None) -> CFModel | None:
    if not model_dir or not (Path(model_dir) / "cf_model.json").exists():
        return None
    return CFModel.load(model_dir)
