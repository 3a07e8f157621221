"""Collaborative filtering benchmark: ML-100k quality and fold-in latency.

    python -m bench.bench_cf            # quality (validation-tuned) + fold-in latency
    python -m bench.bench_cf --quick    # defaults only, fewer timing rounds

Quality: per-user time-ordered split of MovieLens-100k (newest 20 % of each user's
ratings held out; every rating counts as an implicit positive). Hyper-parameters are
chosen on a second split of the training part (its newest 20 % per user), never on test.

Latency: one thread for every contender (OPENBLAS/OMP set before numpy loads); a user
with 100 events, 64 factors, 1,682 items; contenders alternate after a warm-up.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy import sparse

from osreco.cf.interactions import Interaction, read_interactions
from osreco.cf.model import CFConfig, CFModel
from osreco.cf.train import decayed_popularity, train_models
from osreco.evaluation.cf import evaluate, format_table, time_split
from osreco.ingest.movielens import movielens_ratings_path

ALS_GRID = [{"regularization": r, "bm25_b": b} for r in (5.0, 10.0, 20.0, 50.0) for b in (0.3, 0.5, 0.8)]
EASE_GRID = (100.0, 200.0, 300.0, 500.0)


def load_events() -> list[Interaction]:
    """ML-100k ratings as implicit positives (value 1)."""
    data = read_interactions(movielens_ratings_path())
    return [Interaction(e.user_id, e.item_id, 1.0, e.timestamp) for e in data.interactions]


def tune(train: list[Interaction], items: list[str], base: CFConfig) -> CFConfig:
    """Pick ALS and EASE settings by validation NDCG@10 on a split of ``train``."""
    fit, valid = time_split(train, 0.2)
    best_als, best_ease = (-1.0, {}), (-1.0, base.ease_lambda)
    for params in ALS_GRID:
        res = evaluate(train_models(fit, replace(base, **params), item_ids=items), fit, valid)
        best_als = max(best_als, (res["als"]["ndcg"], params), key=lambda t: t[0])
    for lam in EASE_GRID:
        res = evaluate(train_models(fit, replace(base, ease_lambda=lam, iterations=1), item_ids=items), fit, valid)
        best_ease = max(best_ease, (res["item-item"]["ndcg"], lam), key=lambda t: t[0])
    print(f"validation picks: ALS {best_als[1]} (NDCG {best_als[0]:.4f}), EASE lambda {best_ease[1]} "
          f"(NDCG {best_ease[0]:.4f})")
    return replace(base, ease_lambda=best_ease[1], **best_als[1])


def quality(config: CFConfig, events: list[Interaction], label: str) -> CFModel:
    """Train on the split, print the metrics table; returns the model."""
    train, test = time_split(events, 0.2)
    items = sorted({e.item_id for e in events})
    started = time.perf_counter()
    model = train_models(train, config, item_ids=items)
    seconds = time.perf_counter() - started
    results = evaluate(model, train, test)
    pop = model.popularity
    model.popularity = decayed_popularity(train, items, half_life_days=1e9)
    results["popularity (all-time)"] = evaluate(model, train, test)["popularity"]
    model.popularity = pop
    cooc = train_models(train, replace(config, max_ease_items=0, iterations=1), item_ids=items)
    results["co-occurrence (>20k-item fallback, forced)"] = evaluate(cooc, train, test)["item-item"]
    print(f"\n### ML-100k, {label} (train {len(train)} events, test {len(test)} users, "
          f"training {seconds:.1f} s for ALS+EASE+popularity)\n")
    print(format_table(results))
    return model


def _median_ms(fn: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def latency(model: CFModel, rounds: int) -> None:
    """Fold-in of a 100-event user: osreco numpy vs implicit's Cython user solve, plus top-10."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    idx = rng.choice(len(model.item_ids), 100, replace=False)
    items, values = [str(model.item_ids[i]) for i in idx], [1.0] * 100
    ref = AlternatingLeastSquares(factors=model.dim, regularization=model.config.regularization,
                                  alpha=model.config.alpha, num_threads=1)
    ref.item_factors = model.item_factors.astype(np.float32)
    ref.user_factors = np.zeros((1, model.dim), np.float32)
    conf = model.confidences(list(idx), values) / model.config.alpha
    row = sparse.csr_matrix((conf.astype(np.float32), (np.zeros(100, int), idx)), shape=(1, len(model.item_ids)))
    contenders = {
        "osreco fold_in (numpy, incl. weighting)": lambda: model.fold_in(items, values),
        "implicit recalculate_user (Cython)": lambda: ref.recalculate_user(0, row),
        "osreco fold_in + recommend top-10": lambda: model.recommend(model.fold_in(items, values), items, 10),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up
        _median_ms(fn, 20)
    for _ in range(10):  # alternate contenders in blocks
        for name, fn in contenders.items():
            times[name] += _median_ms(fn, max(rounds // 10, 1))
    gap = np.abs(model.fold_in(items, values) - ref.recalculate_user(0, row)).max()
    base = statistics.median(times["implicit recalculate_user (Cython)"])
    print(f"\n### Fold-in latency, 100 events, {model.dim} factors, {len(model.item_ids)} items, 1 thread "
          f"(max |osreco - implicit| = {gap:.1e})\n")
    print("| contender | median ms | p95 ms | vs implicit |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {np.percentile(ts, 95):.3f} | {med / base:.2f}x |")


def main() -> None:
    """Run the benchmark and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="defaults only, fewer timing rounds")
    args = parser.parse_args()
    events = load_events()
    base = CFConfig(threads=1)
    model = quality(base, events, "defaults")
    if not args.quick:
        train, _ = time_split(events, 0.2)
        tuned = tune(train, sorted({e.item_id for e in events}), base)
        quality(tuned, events, f"validation-tuned (reg {tuned.regularization}, bm25_b {tuned.bm25_b}, "
                               f"EASE lambda {tuned.ease_lambda})")
    latency(model, rounds=200 if args.quick else 1000)


if __name__ == "__main__":
    main()
