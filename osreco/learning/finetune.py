"""Fine-tuning inside ``osreco learn``: the IPW click rows -> a fine-tuned encoder and reranker,
each evaluated against the served one and promoted through the gate only when it is not worse.

Data: the click/skip rows :mod:`osreco.learning.clicks` wrote since the last fine-tune (the
``pending`` files of the learn state). Users are split by a seeded hash: the training users'
rows train, the held-out users' rows (the most recent traffic the models never saw) evaluate.

- **Encoder**: ``query -> clicked item`` pairs, each weighted by the inverse propensity of
  the position it was clicked at (summed over repeats of the same pair, then scaled to mean 1),
  trained with the weighted in-batch ranking loss (:func:`osreco.training.encoder.pair_loss`),
  starting from the last promoted fine-tuned model (``<state>/models/encoder``) or the base.
- **Reranker**: clicks are positives with their IPW weight, shown-and-passed-over items and
  explicit skips negatives, plus one sampled catalog item per positive.

Evaluation, the same for both: ``traffic_ndcg``, the IPW-weighted NDCG@10 of the held-out
requests' clicks when their shown items are re-ordered by the model, and ``ndcg`` of
``osreco eval``'s personalized-search task scored offline (:func:`osreco.evaluation.gate.offline_evaluator`).
The gate (:func:`osreco.evaluation.gate.decide`) promotes on ``ndcg`` with ``traffic_ndcg`` as a
guard: a candidate that loses on either is refused and nothing served changes (with no held-out
request to score, only the offline task gates).

Promotion: the encoder through :func:`osreco.evaluation.gate.promote` (``osreco promote``'s code:
install under ``<bundles_root>``, rebuild the alias with the new vectors, switch ``current``;
the sidecar follows the alias's ``artifact_id``); the reranker as ``<bundles_root>/reranker/<artifact>``
with ``<bundles_root>/reranker/current`` switched last (the sidecar's ``OSRECO_RERANK_BUNDLE`` names
that link). torch loads only when a fine-tune actually runs.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osreco.learning.errors import LearnError

__all__ = ["FinetuneConfig", "read_rows", "click_pairs", "rerank_examples", "traffic_ndcg", "run_finetune",
           "MODELS_DIR", "RERANK_DIR"]

MODELS_DIR = "models"
RERANK_DIR = "reranker"
Scorer = Callable[[str, Sequence[str]], Sequence[float]]
"""(query, item texts) -> one relevance score per text (higher is better)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """What a fine-tune inside ``osreco learn`` trains, how it is gated and where it promotes.

    Args:
        bundles_root: where served encoder bundles live (``<root>/current`` is the served one
            unless ``current`` is given; rerankers go to ``<root>/reranker``).
        current: the served encoder bundle (default ``<bundles_root>/current``).
        alias: the item index rebuilt with a promoted encoder's vectors (None: no re-index).
        catalog: ``movielens`` or a catalog JSONL (item_id, title, text): the items' texts.
        base: the Hugging Face folder fine-tuning starts from before any fine-tune was
            promoted (default: the packaged all-MiniLM-L6-v2).
        rerank_base: the same for the reranker (default: ``base``).
        encoder, reranker: which models to fine-tune.
        quantize: precision of the exported candidates (``int8`` or None).
        epochs, batch_size, max_steps, threads, seed: the training loop's options; ``lr`` the
            peak learning rate (None: the trainers' defaults, 2e-5 encoder and 3e-5 reranker).
        heldout_fraction: share of users whose rows evaluate instead of training.
        min_delta: how much higher the candidate's offline ``ndcg`` must be.
        eval_queries, eval_users_per_query, eval_items: size of the offline search task
            (``eval_items`` None: all 1,681 movies).
    """

    bundles_root: Path
    current: Path | None = None
    alias: str | None = None
    catalog: str = "movielens"
    base: Path | None = None
    rerank_base: Path | None = None
    encoder: bool = True
    reranker: bool = True
    quantize: str | None = "int8"
    epochs: int = 1
    batch_size: int = 16
    max_steps: int | None = 400
    lr: float | None = None
    threads: int | None = None
    seed: int = 13
    heldout_fraction: float = 0.2
    min_delta: float = 0.0
    eval_queries: int = 48
    eval_users_per_query: int = 4
    eval_items: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundles_root", Path(self.bundles_root))
        if not 0.0 < self.heldout_fraction < 1.0:
            raise LearnError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}",
                             fix="pass --finetune-heldout between 0 and 1")
        if self.quantize not in (None, "int8"):
            raise LearnError(f"quantize must be int8 or None, got {self.quantize!r}")

    @property
    def current_bundle(self) -> Path:
        """The served encoder bundle."""
        return Path(self.current) if self.current else self.bundles_root / "current"


def read_rows(files: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The click/skip rows of the learn state's training files (missing files are skipped:
    a state folder copied without them only loses that data)."""
    rows: list[dict[str, Any]] = []
    for f in files:
        path = Path(f)
        if path.is_file():
            rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return rows


def _catalog(catalog: str) -> dict[str, Any]:
    from osreco.training import data as td

    return td.movielens_catalog() if catalog == "movielens" else td.read_training_items(catalog)


def click_pairs(rows: Iterable[dict[str, Any]], catalog: dict[str, Any]) -> list[Any]:
    """``query -> clicked item`` pairs, weighted by the summed IPW weights of their clicks,
    scaled so the mean weight is 1 (the learning rate keeps its meaning)."""
    from osreco.training.encoder import Pair

    weights: dict[tuple[str, str], float] = defaultdict(float)
    users: dict[tuple[str, str], str] = {}
    for r in rows:
        if r.get("kind") == "click" and r.get("item_id") in catalog and (r.get("query") or "").strip():
            key = (str(r["query"]).strip(), str(r["item_id"]))
            weights[key] += float(r.get("weight") or 1.0)
            users.setdefault(key, str(r.get("user_id") or ""))
    if not weights:
        return []
    scale = len(weights) / sum(weights.values())
    return [Pair(q, catalog[i].document, "query", users[(q, i)], i, round(w * scale, 6))
            for (q, i), w in sorted(weights.items())]


def rerank_examples(rows: Iterable[dict[str, Any]], catalog: dict[str, Any], sampled_negatives: int = 1,
                    seed: int = 13) -> list[Any]:
    """Clicks (IPW weight) as positives, passed-over items and skips as negatives (weight 1), plus
    ``sampled_negatives`` random catalog items per positive; a pair clicked anywhere is positive."""
    import random

    from osreco.training.reranker import RerankExample

    rows = [r for r in rows if r.get("item_id") in catalog and (r.get("query") or "").strip()]
    pos: dict[tuple[str, str], float] = defaultdict(float)
    users: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (str(r["query"]).strip(), str(r["item_id"]))
        users.setdefault(key, str(r.get("user_id") or ""))
        if r.get("kind") == "click":
            pos[key] += float(r.get("weight") or 1.0)
    scale = len(pos) / sum(pos.values()) if pos else 1.0
    out = [RerankExample(q, catalog[i].document, 1.0, users[(q, i)], i, round(w * scale, 6))
           for (q, i), w in sorted(pos.items())]
    negatives = sorted({k for k in users if k not in pos})
    out += [RerankExample(q, catalog[i].document, 0.0, users[(q, i)], i) for q, i in negatives]
    rng, ids, seen = random.Random(seed), sorted(catalog), set(users)
    for (q, i) in sorted(pos):
        for _ in range(sampled_negatives):
            other = rng.choice(ids)
            if (q, other) not in seen:
                seen.add((q, other))
                out.append(RerankExample(q, catalog[other].document, 0.0, users[(q, i)], other))
    return out


def traffic_ndcg(rows: Iterable[dict[str, Any]], catalog: dict[str, Any], score: Scorer, k: int = 10) -> float:
    """IPW-weighted NDCG@k of logged requests' clicks when their logged items (clicked, passed
    over, skipped) are re-ordered by ``score``; requests weigh by their clicks' mean IPW weight.
    NaN when no request has a click among known items."""
    by_request: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("item_id") not in catalog or not (r.get("query") or "").strip():
            continue
        req = by_request.setdefault(str(r.get("query_id")), {"query": str(r["query"]).strip(), "items": {}})
        clicked = r.get("kind") == "click"
        prev = req["items"].get(str(r["item_id"]))
        req["items"][str(r["item_id"])] = (float(r.get("weight") or 1.0), True) if clicked else (prev or (1.0, False))
    total = weight_sum = 0.0
    for req in by_request.values():
        items = sorted(req["items"])
        clicks = [req["items"][i][0] for i in items if req["items"][i][1]]
        if not clicks or len(items) < 2:
            continue
        scores = list(score(req["query"], [catalog[i].document for i in items]))
        order = sorted(range(len(items)), key=lambda j: (-float(scores[j]), items[j]))
        dcg = sum(1.0 / math.log2(rank + 2) for rank, j in enumerate(order[:k]) if req["items"][items[j]][1])
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(clicks))))
        w = sum(clicks) / len(clicks)
        total += w * dcg / ideal
        weight_sum += w
    return total / weight_sum if weight_sum else float("nan")


def _encoder_scorer(bundle: Path, threads: int | None) -> Scorer:
    import numpy as np

    from osreco.exporter import Encoder

    enc = Encoder(bundle, threads=threads)

    def score(query: str, texts: Sequence[str]) -> Sequence[float]:
        q = enc.encode_queries([query])[0]
        d = enc.encode_items(list(texts))
        d = d / np.linalg.norm(d, axis=1, keepdims=True).clip(1e-12)
        return (d @ (q / max(float(np.linalg.norm(q)), 1e-12))).tolist()

    return score


def _rerank_scorer(bundle: Path, threads: int | None) -> Scorer:
    import numpy as np

    from osreco.exporter import Encoder

    enc = Encoder(bundle, threads=threads)
    return lambda query, texts: np.asarray(enc.score_pairs([(query, t) for t in texts])).reshape(-1).tolist()


def _guards(held_rows: list[dict], catalog: dict[str, Any]) -> tuple[str, ...]:
    """``("traffic_ndcg",)`` when the held-out rows have a request to score (a click and at least
    two known items), else none: with no held-out traffic only the offline task gates."""
    flat = traffic_ndcg(held_rows, catalog, lambda _q, texts: [0.0] * len(texts))
    return ("traffic_ndcg",) if math.isfinite(flat) else ()


def _split(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    from types import SimpleNamespace

    from osreco.training.encoder import split_pairs

    tagged = [SimpleNamespace(user_id=str(r.get("user_id") or ""), row=r) for r in rows]
    train, held = split_pairs(tagged, fraction, seed)
    return [t.row for t in train], [t.row for t in held]


def _loop(config: FinetuneConfig, lr: float) -> Any:
    from osreco.training.loop import LoopConfig

    return LoopConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr or lr,
                      max_steps=config.max_steps, device="auto", threads=config.threads, seed=config.seed,
                      progress=False)


def run_finetune(config: FinetuneConfig, rows: list[dict[str, Any]], state_dir: Path, run_id: str,
                 client: Any = None, report: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """Train, evaluate and gate the encoder and the reranker on ``rows`` (see the module docstring).

    Returns:
        ``{"encoder": {...}, "reranker": {...}, "promoted": [...], "refused": [...], "seconds"}``: per
        model the data sizes, the training history's last row, both sides' metrics and the verdict.

    Raises:
        LearnError: the served encoder bundle is missing.
    """
    if not (config.current_bundle / "manifest.json").is_file():
        raise LearnError("fine-tuning needs the served encoder bundle", file=str(config.current_bundle),
                         fix="pass --bundles-root with a `current` bundle (osreco promote writes it) or --bundle")
    t0 = time.perf_counter()
    catalog = _catalog(config.catalog)
    train_rows, held_rows = _split(rows, config.heldout_fraction, config.seed)
    work = Path(state_dir) / "finetune" / run_id
    out: dict[str, Any] = {"rows": len(rows), "train_rows": len(train_rows), "heldout_rows": len(held_rows),
                           "promoted": [], "refused": []}
    try:
        if config.encoder:
            out["encoder"] = _finetune_encoder(config, catalog, train_rows, held_rows, work, state_dir, client, report)
            (out["promoted"] if out["encoder"].get("promoted") else out["refused"]).append(
                {"what": "encoder", "reason": out["encoder"]["summary"]})
        if config.reranker:
            out["reranker"] = _finetune_reranker(config, catalog, train_rows, held_rows, work, state_dir, report)
            (out["promoted"] if out["reranker"].get("promoted") else out["refused"]).append(
                {"what": "reranker", "reason": out["reranker"]["summary"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _keep_model(trained: Path, state_dir: Path, name: str) -> None:
    """The promoted Hugging Face folder becomes the next fine-tune's start (atomic swap)."""
    from osreco.training.loop import save_atomically

    def copy(tmp: Path) -> None:
        shutil.copytree(trained, tmp, dirs_exist_ok=True)

    save_atomically(Path(state_dir) / MODELS_DIR / name, copy)


def _start(state_dir: Path, name: str, base: Path | None) -> Path:
    kept = Path(state_dir) / MODELS_DIR / name
    if (kept / "config.json").is_file():
        return kept
    from osreco.training.loop import packaged_minilm

    return Path(base) if base else packaged_minilm()


def _finetune_encoder(config: FinetuneConfig, catalog: dict[str, Any], train_rows: list[dict],
                      held_rows: list[dict], work: Path, state_dir: Path, client: Any,
                      report: Callable[[str], None]) -> dict[str, Any]:
    from osreco.evaluation.gate import PromoteConfig, offline_evaluator, promote
    from osreco.training.encoder import EncoderTrainConfig, split_pairs, train_encoder

    pairs = click_pairs(train_rows, catalog)
    info: dict[str, Any] = {"pairs": len(pairs), "base": str(_start(state_dir, "encoder", config.base))}
    if len(pairs) < 2 * config.batch_size:
        info.update(promoted=False, summary=f"skipped: {len(pairs)} click pairs < {2 * config.batch_size}")
        return info
    train, dev = split_pairs(pairs, 0.1, config.seed)
    result = train_encoder(EncoderTrainConfig(Path(info["base"]), work / "encoder", _loop(config, 2e-5)), train, dev)
    info["history"] = result.history[-1]
    offline = offline_evaluator(config.eval_queries, config.eval_users_per_query, threads=config.threads,
                                max_items=config.eval_items)

    guards = _guards(held_rows, catalog)

    def evaluate(bundle: Path) -> dict[str, float]:
        traffic = {"traffic_ndcg": traffic_ndcg(held_rows, catalog, _encoder_scorer(bundle, config.threads))}
        return {**offline(bundle), **(traffic if guards else {})}

    gate = PromoteConfig(result.out_dir, config.current_bundle, config.bundles_root, config.quantize, config.alias,
                         config.catalog, min_delta=config.min_delta, guards=guards)
    decision = promote(gate, evaluate, client if config.alias else None, report=report)
    info.update(current=dict(decision.decision.current), candidate=dict(decision.decision.candidate),
                promoted=decision.promoted, summary=decision.decision.summary())
    if decision.promoted:
        info.update(artifact_id=decision.artifact_id, bundle=str(decision.bundle), index=decision.index)
        _keep_model(result.out_dir, state_dir, "encoder")
    return info


def _finetune_reranker(config: FinetuneConfig, catalog: dict[str, Any], train_rows: list[dict],
                       held_rows: list[dict], work: Path, state_dir: Path,
                       report: Callable[[str], None]) -> dict[str, Any]:
    from osreco.evaluation.gate import decide, offline_evaluator
    from osreco.exporter.bundles import bundle_path, switch_current
    from osreco.training.encoder import split_pairs
    from osreco.training.reranker import RerankTrainConfig, export_reranker, train_reranker

    examples = rerank_examples(train_rows, catalog, seed=config.seed)
    labels = {x.label for x in examples}
    info: dict[str, Any] = {"examples": len(examples),
                            "base": str(_start(state_dir, "reranker", config.rerank_base or config.base))}
    if labels != {0.0, 1.0} or len(examples) < 2 * config.batch_size:
        info.update(promoted=False, summary=f"skipped: {len(examples)} examples (labels {sorted(labels)})")
        return info
    train, dev = split_pairs(examples, 0.1, config.seed)
    result = train_reranker(RerankTrainConfig(Path(info["base"]), work / "reranker", _loop(config, 3e-5)), train, dev)
    info["history"] = result.history[-1]
    staged = work / "reranker-bundle"
    export_reranker(result.out_dir, staged, config.quantize, overwrite=True, report=report)
    root = config.bundles_root / RERANK_DIR
    served = root / "current"
    encoder, guards = config.current_bundle, _guards(held_rows, catalog)

    def evaluate(rerank: Path | None) -> dict[str, float]:
        offline = offline_evaluator(config.eval_queries, config.eval_users_per_query, threads=config.threads,
                                    max_items=config.eval_items, rerank_bundle=rerank)
        if not guards:
            return offline(encoder)
        scorer = _rerank_scorer(rerank, config.threads) if rerank else _encoder_scorer(encoder, config.threads)
        return {**offline(encoder), "traffic_ndcg": traffic_ndcg(held_rows, catalog, scorer)}

    current = evaluate(served if (served / "manifest.json").is_file() else None)
    decision = decide(evaluate(staged), current, "ndcg", config.min_delta, guards)
    report(decision.table())
    report(decision.summary())
    info.update(current=dict(decision.current), candidate=dict(decision.candidate), promoted=decision.promote,
                summary=decision.summary())
    if decision.promote:
        from osreco.exporter import load_manifest

        artifact_id = load_manifest(staged).artifact_id
        final = bundle_path(root, artifact_id)
        root.mkdir(parents=True, exist_ok=True)
        if not final.exists():
            shutil.copytree(staged, final)
        switch_current(root, final)
        info.update(artifact_id=artifact_id, bundle=str(final))
        _keep_model(result.out_dir, state_dir, "reranker")
    return info
