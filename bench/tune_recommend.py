"""Choose the served recommendation blend on a validation split, then score it once on test.

    python -m bench.tune_recommend            # grid on validation, chosen settings on test

The split is ``osreco cf eval``'s (per-user time-ordered, newest 20 % held out, binary
relevance, NDCG@10 with ``ndcg_binary_at_k``). Validation is a second time-ordered split of
the training part (its newest 20 % per user); the grid never sees the test split. Scoring
reproduces ``/v1/recommend`` in memory with the sidecar's own functions
(:func:`osreco.plugin.recommend.neighbor_scores`, :func:`osreco.plugin.recommend.blend`): the
same candidates (ALS top-N unseen, neighbour top-N, popularity top-N), the neighbours that
``osreco cf train`` stores (:func:`osreco.cf.priors.top_neighbors`), the stored popularity.
Similar items: next-item HR@10 (each test user's last training item -> their first held-out
item) for the content-only kNN and the co-engagement blend, content from the eval index's
embeddings when ``--index`` is given.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import itertools
import json
import math
from dataclasses import replace
from typing import Any

import numpy as np

from osreco.cf.interactions import Interaction, read_interactions
from osreco.cf.model import CFConfig, CFModel, top_k
from osreco.cf.priors import popularity_at, top_neighbors
from osreco.cf.train import train_models
from osreco.evaluation.cf import time_split
from osreco.evaluation.metrics import ndcg_binary_at_k
from osreco.ingest.movielens import movielens_ratings_path
from osreco.plugin.recommend import RecommendSettings, blend, neighbor_scores


class Served:
    """``/v1/recommend``'s scoring in memory for one trained model."""

    def __init__(self, model: CFModel, train: list[Interaction], neighbors: int = 50):
        self.model = model
        ids = [str(i) for i in model.item_ids.tolist()]
        self.ids = ids
        self.pop, _ = popularity_at(train, ids, model.config.half_life_days)
        self.nb = dict(zip(ids, top_neighbors(model.item_item, ids, neighbors)))
        self.history: dict[str, list[str]] = {}
        for e in sorted(train, key=lambda e: (e.timestamp, e.item_id)):
            self.history.setdefault(e.user_id, []).append(e.item_id)

    def rank(self, user: str, s: RecommendSettings, k: int = 10) -> list[str]:
        m = self.model
        seen = list(dict.fromkeys(self.history.get(user, [])))
        seen_set, size = set(seen), s.candidates
        vec = m.user_vector(user)
        signals: dict[str, dict[str, float]] = {}
        if vec is not None:
            als = m.als_scores(vec).astype(np.float64)
            best = top_k(als, size, m.item_positions(seen))
            signals["als"] = {self.ids[i]: float(als[i]) for i in best}
        recent = seen[-s.history_items:][::-1]
        nb, _ = neighbor_scores([(i, *self.nb[i]) for i in recent], s.history_decay, seen_set)
        signals["neighbors"] = dict(sorted(nb.items(), key=lambda kv: -kv[1])[:size])
        pop_top = top_k(self.pop, size, m.item_positions(seen))
        cands = list(dict.fromkeys([*signals.get("als", {}), *signals["neighbors"],
                                    *(self.ids[i] for i in pop_top)]))
        pos = m.item_positions(cands)
        signals["popularity"] = {c: math.log1p(self.pop[p]) for c, p in zip(cands, pos)}
        if vec is not None:
            f = m.item_factors[pos] @ vec
            signals["als"] = {c: float(x) for c, x in zip(cands, f)}
        parts = blend(signals, s.weights(), cands)
        return sorted(cands, key=lambda c: (-sum(parts[c].values()), -signals["popularity"][c], c))[:k]


def ndcg(served: Served, test: dict[str, set[str]], s: RecommendSettings) -> float:
    return float(np.mean([ndcg_binary_at_k(served.rank(u, s), rel, 10) for u, rel in test.items()]))


def similar_hr(served: Served, emb: dict[str, np.ndarray], queries: dict[str, tuple[str, str]], weight: float,
               k: int = 10) -> float:
    """Next-item HR@k of ``SimilarItems``' blend in memory: content top-k kNN + the stored neighbours."""
    ids = [i for i in served.ids if i in emb]
    mat = np.stack([emb[i] / max(float(np.linalg.norm(emb[i])), 1e-12) for i in ids])
    hits = []
    for query, target in queries.values():
        signals: dict[str, dict[str, float]] = {}
        if query in emb and weight < 1:
            sims = mat @ (emb[query] / max(float(np.linalg.norm(emb[query])), 1e-12))
            best = [j for j in np.argsort(-sims)[:k + 1] if ids[j] != query][:k]
            signals["dense"] = {ids[j]: float(sims[j]) for j in best}
        if weight > 0:
            signals["neighbors"] = dict(zip(*served.nb[query]))
        cands = list(dict.fromkeys(c for v in signals.values() for c in v))
        parts = blend(signals, {"neighbors": weight, "dense": 1.0 - weight}, cands)
        top = sorted(cands, key=lambda c: (-sum(parts[c].values()), c))[:k]
        hits.append(float(target in top))
    return float(np.mean(hits))


def next_items(train: list[Interaction], test: dict[str, set[str]],
               events: list[Interaction]) -> dict[str, tuple[str, str]]:
    """Per test user: (their newest training item, their first held-out item)."""
    last: dict[str, str] = {}
    for e in sorted(train, key=lambda e: (e.timestamp, e.item_id)):
        last[e.user_id] = e.item_id
    first: dict[str, str] = {}
    for e in sorted(events, key=lambda e: (e.timestamp, e.item_id)):
        if e.user_id in test and e.item_id in test[e.user_id] and e.user_id not in first:
            first[e.user_id] = e.item_id
    return {u: (last[u], first[u]) for u in first if u in last}


def load() -> list[Interaction]:
    """ML-100k with every rating an implicit positive (as ``osreco cf eval``)."""
    return [Interaction(e.user_id, e.item_id, 1.0, e.timestamp)
            for e in read_interactions(movielens_ratings_path()).interactions]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a smaller grid")
    ap.add_argument("--index", default=None, help="an ML-100k item index with embeddings (similar items)")
    args = ap.parse_args()
    events = load()
    items = sorted({e.item_id for e in events})
    config = CFConfig(threads=1)
    train, test = time_split(events, 0.2)
    fit, val = time_split(train, 0.2)
    vmodel = train_models(fit, config, item_ids=items)
    vserved = Served(vmodel, fit)
    # a first, wider grid (popularity 0-0.4, neighbours 0.5-2, decay 1-0.9, history 20-200) put the
    # best at the neighbour/decay edges with history 20 and popularity flat in 0-0.1; this one
    # extends those edges
    grid: dict[str, tuple[Any, ...]] = {"popularity_weight": (0.0, 0.05, 0.1), "neighbor_weight": (1.0, 2.0, 3.0, 4.0),
            "history_decay": (0.95, 0.9, 0.8, 0.7), "history_items": (20,), "candidates": (50,)}
    if args.quick:
        grid = {"popularity_weight": (0.0, 0.1), "neighbor_weight": (2.0,), "history_decay": (0.9,),
                "history_items": (20,), "candidates": (50,)}
    rows: list[tuple[float, dict[str, Any]]] = []
    for values in itertools.product(*grid.values()):
        s = replace(RecommendSettings(), **dict(zip(grid, values)))
        rows.append((ndcg(vserved, val, s), dict(zip(grid, values))))
        print(f"validation {rows[-1][1]}: NDCG@10 {rows[-1][0]:.4f}", flush=True)
    best_val, best = max(rows, key=lambda r: r[0])
    model = train_models(train, config, item_ids=items)
    served = Served(model, train)
    chosen = replace(RecommendSettings(), **best)
    popularity_only = replace(RecommendSettings(), als_weight=0.0, neighbor_weight=0.0, popularity_weight=1.0)
    als_only = replace(RecommendSettings(), neighbor_weight=0.0, popularity_weight=0.0)
    out = {"validation_best": {"settings": best, "ndcg": best_val},
           "test": {"served (chosen)": ndcg(served, test, chosen), "served (defaults)": ndcg(served, test,
                                                                                            RecommendSettings()),
                    "popularity (served)": ndcg(served, test, popularity_only),
                    "als only (served)": ndcg(served, test, als_only)}}
    if args.index:
        from osreco.cf.store import read_item_embeddings
        from osreco.ingest.connection import OpenSearchConfig, connect

        emb = read_item_embeddings(connect(OpenSearchConfig.from_env()), args.index)
        vq, tq = next_items(fit, val, train), next_items(train, test, events)
        weights = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)
        val_hr = {w: similar_hr(vserved, emb, vq, w) for w in weights}
        w_best = max(val_hr, key=lambda w: val_hr[w])
        out["similar"] = {"validation_hr@10": val_hr, "chosen": w_best,
                          "test_hr@10": {"content only": similar_hr(served, emb, tq, 0.0),
                                         f"blend {w_best}": similar_hr(served, emb, tq, w_best)}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
