"""The collaborative part of a learn run: popularity, user fold-in or a full retrain, gated.

* Every run recomputes the time-decayed popularity of every item from all stored positive
  events (forgotten users dropped) and moves the popularity clock (``popularity_ref`` in the
  CF metadata) with it, so the sidecar's online bumps stay on the same scale.
* Incremental (the default when a served model exists): the users with new events are folded
  into the served model's item factors (the same fold-in the sidecar runs online) and the
  model file is rewritten with their vectors.
* Full (``--full``, every ``full_every`` runs, or when there is no model yet): ALS, the item-item
  model and popularity are retrained on all events. The candidate is first trained on the
  events before this run's window and compared with the served model on the new events
  (recall@20 of each user's new items from their earlier history): a worse one is refused.

Nothing is written until :func:`promote_cf`; it writes the model files one by one with an
atomic replace (``CFModel.save``), so the sidecar's watch (``osreco.plugin.settings_store``)
loads either the old or the new model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from opensearchpy import OpenSearch

from osreco.cf import store as cf_store
from osreco.cf.events import KIND_WEIGHTS
from osreco.cf.interactions import Interaction
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.priors import popularity_at, priors_from_model, write_priors
from osreco.cf.train import train_models
from osreco.ingest.bulk import RetryPolicy, bulk_write
from osreco.learning.logs import parse_time

__all__ = ["TRAIN_KINDS", "CFPlan", "interactions_of", "plan_cf", "promote_cf", "recall_at"]

TRAIN_KINDS = ("view", "click", "add_to_cart", "purchase", "rating")
"""The event kinds collaborative training reads (impressions, skips and dwell are not positives)."""
RECALL_K = 20


def interactions_of(events: Sequence[Mapping[str, Any]]) -> list[Interaction]:
    """Training rows of the positive events (value by kind, a rating's own value)."""
    out = []
    for e in events:
        kind = e.get("kind")
        if kind not in TRAIN_KINDS or not e.get("user_key") or not e.get("item_id"):
            continue
        value = float(e.get("value", 1.0) or 0.0)
        value = value if kind == "rating" else KIND_WEIGHTS.get(str(kind), 1.0) * value
        if value > 0:
            out.append(Interaction(str(e["user_key"]), str(e["item_id"]), value,
                                   parse_time(e["timestamp"]).timestamp()))
    return out


def _by_user(rows: Sequence[Interaction]) -> dict[str, list[Interaction]]:
    out: dict[str, list[Interaction]] = {}
    for r in rows:
        out.setdefault(r.user_id, []).append(r)
    return out


def recall_at(model: CFModel, history: Sequence[Interaction], future: Sequence[Interaction],
              k: int = RECALL_K) -> tuple[float, int]:
    """Mean recall@k of each user's ``future`` items, ranked from their ``history`` folded into
    ``model`` (history items excluded); users without history are not counted.

    Returns:
        ``(recall, users counted)``.
    """
    past, later = _by_user(history), _by_user(future)
    known = set(model.item_ids.tolist())
    total, n = 0.0, 0
    for user, rows in later.items():
        hist = [r for r in past.get(user, []) if r.item_id in known]
        wanted = {r.item_id for r in rows if r.item_id in known} - {r.item_id for r in hist}
        if not hist or not wanted:
            continue
        vec = model.fold_in([r.item_id for r in hist], [r.value for r in hist])
        top = model.recommend(vec, exclude=[r.item_id for r in hist], k=k)
        total += len(wanted & {i for i, _ in top}) / min(k, len(wanted))
        n += 1
    return (total / n if n else 0.0), n


@dataclass
class CFPlan:
    """What the CF step would promote: a model (or None), the users to rewrite, the priors' input."""

    mode: str                      # "incremental", "full", or "popularity" (no model)
    model: CFModel | None
    interactions: list[Interaction]
    users: list[str] = field(default_factory=list)
    promote: bool = True
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "users_updated": len(self.users), "promote": self.promote,
                "reason": self.reason, **self.metrics}


def plan_cf(all_events: Sequence[Mapping[str, Any]], new_events: Sequence[Mapping[str, Any]],
            current: CFModel | None, item_ids: Sequence[str], full: bool, config: CFConfig) -> CFPlan:
    """Build the CF candidate (nothing is written; see the module docstring)."""
    rows = interactions_of(all_events)
    new = interactions_of(new_events)
    if not rows:
        return CFPlan("popularity", None, rows, promote=False, reason="no positive events yet")
    if current is not None and not full:
        model = _fold_users(current, rows, sorted({r.user_id for r in new}))
        return CFPlan("incremental", model, rows, sorted({r.user_id for r in new}),
                      reason=f"{len({r.user_id for r in new})} users with new events folded in")
    config = replace(config, factors=current.dim if current is not None else config.factors)
    model = train_models(rows, config, item_ids=item_ids)
    plan = CFPlan("full", model, rows, sorted({r.user_id for r in rows}))
    new_keys = {(r.user_id, r.item_id, r.timestamp) for r in new}
    before = [r for r in rows if (r.user_id, r.item_id, r.timestamp) not in new_keys]
    if current is None or not new or not before:
        plan.reason = "first model" if current is None else "no new events to compare on; retrained"
        return plan
    candidate = train_models(before, config, item_ids=item_ids)
    cand, users = recall_at(candidate, before, new)
    served, _ = recall_at(current, before, new)
    plan.metrics = {"recall@20": {"served": round(served, 5), "candidate": round(cand, 5), "users": users}}
    if users and cand < served:
        plan.promote = False
        plan.reason = f"refused: candidate recall@20 {cand:.4f} < served {served:.4f} on {users} users' new events"
    else:
        plan.reason = f"recall@20 {served:.4f} -> {cand:.4f} on {users} users' new events"
    return plan


def _fold_users(model: CFModel, rows: Sequence[Interaction], users: Sequence[str]) -> CFModel:
    """``model`` with the vectors of ``users`` folded in from all their interactions."""
    by_user = _by_user(rows)
    keys = [str(k) for k in model.user_keys.tolist()]
    pos = {k: i for i, k in enumerate(keys)}
    factors = np.array(model.user_factors, dtype=np.float32, copy=True)
    extra_keys, extra = [], []
    for user in users:
        hist = by_user.get(user, [])
        vec = model.fold_in([r.item_id for r in hist], [r.value for r in hist]).astype(np.float32)
        if user in pos:
            factors[pos[user]] = vec
        else:
            extra_keys.append(user)
            extra.append(vec)
    if extra:
        factors = np.vstack([factors, np.asarray(extra, dtype=np.float32)])
    user_keys = np.asarray(keys + extra_keys, dtype=object)
    meta = {**model.meta, "users": len(user_keys)}
    return CFModel(model.item_ids, model.item_factors, user_keys, factors, model.popularity, model.item_sums,
                   model.config, model.item_item, meta, model.content_weights)


def promote_cf(client: OpenSearch, store: cf_store.StoreConfig, plan: CFPlan, model_dir: str | Path | None,
               run_id: str, item_ids: Sequence[str], neighbors: int = 50) -> dict[str, Any]:
    """Write the plan: popularity (and neighbours, after a full retrain), the CF metadata's clock,
    item factors and users (full) or the folded users (incremental), then the model files."""
    out: dict[str, Any] = {}
    model = plan.model if plan.promote else None
    half_life = (model.config if model is not None else CFConfig()).half_life_days
    if model is not None and plan.mode == "full":
        embeddings = cf_store.read_item_embeddings(client, store.item_index)
        if embeddings:
            model.fit_content(embeddings)
        priors = priors_from_model(model, plan.interactions, neighbors)
        out["priors"] = write_priors(client, store.item_index, priors, store.chunk_size).as_dict()
        ref = priors.ref
        out["items"] = cf_store.write_item_factors(client, store, model.item_ids.tolist(),
                                                   model.item_factors).as_dict()
        hist: dict[str, list[str]] = {}
        for r in sorted(plan.interactions, key=lambda r: r.timestamp):
            hist.setdefault(r.user_id, []).append(r.item_id)
        out["users"] = cf_store.write_user_vectors(client, store, model.user_keys.tolist(), model.user_factors,
                                                   hist).as_dict()
    else:
        pop, ref = popularity_at(plan.interactions, list(item_ids), half_life)
        actions = ({"_op_type": "update", "_index": store.item_index, "_id": item,
                    "doc": {"popularity": round(float(pop[i]), 6)}} for i, item in enumerate(item_ids))
        out["popularity"] = bulk_write(client, actions, RetryPolicy(), chunk_size=store.chunk_size).as_dict()
        client.indices.refresh(index=store.item_index)
        if model is not None and plan.users:
            written = cf_store.refresh_user_vectors(client, store, model, plan.users)
            out["users"] = {"written": len(written)}
    old = cf_store.read_meta(client, store) or {}
    meta = {**old, "popularity_ref": ref, "popularity_half_life_days": half_life, "learn_run": run_id}
    if model is not None:
        meta = {**meta, **{k: v for k, v in model.meta.items() if k != "run_id"}, "popularity_ref": ref,
                "popularity_half_life_days": half_life}
    meta = {k: v for k, v in meta.items() if k not in ("run_id", "trained_at", "item_index")}
    out["meta_run"] = cf_store.write_meta(client, store, meta)
    if model is not None and model_dir:
        model.meta = {**meta, "run_id": out["meta_run"], "learn_run": run_id,
                      "model_dir": str(Path(model_dir).resolve())}
        model.save(model_dir)
        out["model_dir"] = str(model_dir)
    return out
