"""Offline evaluation of collaborative models: a per-user time-ordered split, scored with
:mod:`osreco.evaluation.metrics`.

Relevance is binary: every held-out event counts as one relevant item, so NDCG is
``ndcg_binary_at_k`` and recall is ``recall_uncapped_at_k`` (hits / all held-out items).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np

from osreco.cf.interactions import Interaction, read_interactions
from osreco.cf.model import CFConfig, CFModel, top_k
from osreco.cf.train import decayed_popularity, train_models
from osreco.cli_errors import command
from osreco.evaluation.metrics import coverage, ndcg_binary_at_k, recall_uncapped_at_k
from osreco.ingest.errors import ConfigError
from osreco.ingest.movielens import movielens_ratings_path


def time_split(interactions: Sequence[Interaction], test_fraction: float = 0.2,
               min_events: int = 5) -> tuple[list[Interaction], dict[str, set[str]]]:
    """Per-user time-ordered split: each user's newest ``test_fraction`` of events is held out.

    Users with fewer than ``min_events`` events stay wholly in training. Test items the user
    already has in training (repeats) are not held out.

    Returns:
        ``(train_events, {user_id: held-out item ids})``.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError("test_fraction must be in (0, 1)", field="test_fraction")
    by_user: dict[str, list[Interaction]] = {}
    for e in interactions:
        by_user.setdefault(e.user_id, []).append(e)
    train: list[Interaction] = []
    test: dict[str, set[str]] = {}
    for user, events in by_user.items():
        events.sort(key=lambda e: (e.timestamp, e.item_id))
        n_test = int(math.ceil(len(events) * test_fraction)) if len(events) >= min_events else 0
        head, tail = events[:len(events) - n_test], events[len(events) - n_test:]
        train.extend(head)
        held = {e.item_id for e in tail} - {e.item_id for e in head}
        if held:
            test[user] = held
    return train, test


METHODS = ("popularity", "als", "item-item", "blend")


def rankings(model: CFModel, train: Sequence[Interaction], users: Sequence[str],
             k: int = 10) -> dict[str, dict[str, list[str]]]:
    """Each user's top ``k`` under popularity, ALS, item-item (EASE) and the blend, training items excluded.

    Args:
        model: the model trained on ``train``.
        train: the training events (user ids as the model knows them).
        users: the users to rank for (scored from their training history).

    Returns:
        ``{method: {user: ranked item ids}}`` for :data:`METHODS`.
    """
    history: dict[str, list[Interaction]] = {}
    for e in train:
        history.setdefault(e.user_id, []).append(e)
    scorers: dict[str, Callable[[str, list[str], list[float]], np.ndarray]] = {
        "popularity": lambda u, h, v: model.popularity,
        "als": lambda u, h, v: model.als_scores(_vector(model, u, h, v)),
        "item-item": lambda u, h, v: model.item_item_scores(h),
        "blend": lambda u, h, v: model.blended_scores(h, v, _vector(model, u, h, v)),
    }
    out: dict[str, dict[str, list[str]]] = {name: {} for name in scorers}
    for user in users:
        events = history.get(user, [])
        items, values = [e.item_id for e in events], [e.value for e in events]
        exclude = model.item_positions(items)
        for name, scorer in scorers.items():
            out[name][user] = [str(model.item_ids[i]) for i in top_k(scorer(user, items, values), k, exclude)]
    return out


def evaluate(model: CFModel, train: Sequence[Interaction], test: dict[str, set[str]],
             k: int = 10) -> dict[str, dict[str, float]]:
    """Recall@k, NDCG@k and coverage of popularity, ALS, item-item and the blend.

    Every user in ``test`` is scored from their training history; training items are excluded.

    Returns:
        ``{method: {"recall": .., "ndcg": .., "coverage": ..}}``.
    """
    ranked = rankings(model, train, list(test), k)
    results: dict[str, dict[str, float]] = {}
    for name, by_user in ranked.items():
        lists = [by_user[u] for u in test]
        results[name] = {
            "recall": float(np.mean([recall_uncapped_at_k(by_user[u], rel, k) for u, rel in test.items()])),
            "ndcg": float(np.mean([ndcg_binary_at_k(by_user[u], rel, k) for u, rel in test.items()])),
            "coverage": coverage(lists, len(model.item_ids), k)}
    return results


def _vector(model: CFModel, user: str, items: list[str], values: list[float]) -> np.ndarray:
    vec = model.user_vector(user)
    return vec if vec is not None else model.fold_in(items, values)


def evaluate_file(path: Path, config: CFConfig, k: int = 10,
                  test_fraction: float = 0.2) -> dict[str, dict[str, float]]:
    """Train on each user's older events, test on the newest ``test_fraction`` (implicit: all events = 1).

    Returns:
        ``{method: {recall, ndcg, coverage}}`` plus an all-time popularity row.
    """
    data = read_interactions(path)
    events = [Interaction(e.user_id, e.item_id, 1.0, e.timestamp) for e in data.interactions]
    train_events, test = time_split(events, test_fraction)
    model = train_models(train_events, config, item_ids=sorted({e.item_id for e in events}))
    results = evaluate(model, train_events, test, k)
    model.popularity = decayed_popularity(train_events, model.item_ids.tolist(), half_life_days=1e9)
    results["popularity (all-time)"] = evaluate(model, train_events, test, k)["popularity"]
    return results


@command(name="eval")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Interactions file (default: MovieLens-100k from the recbole wheel).")
@click.option("--k", type=int, default=10, show_default=True, help="Cut-off of the metrics.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def eval_(data_path: str | None, k: int, as_json: bool) -> None:
    """Print Recall@k, NDCG@k and coverage of popularity, ALS, EASE and the blend (time-ordered split)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    path = Path(data_path) if data_path else movielens_ratings_path()
    results = evaluate_file(path, CFConfig(), k)
    if as_json:
        click.echo(json.dumps(results))
        return
    click.echo(f"{path.name}: per-user time-ordered split (newest 20% of each user's events held out), "
               f"all events as implicit positives, full ranking, k={k}\n")
    click.echo(format_table(results, k))


def format_table(results: dict[str, dict[str, float]], k: int = 10) -> str:
    """Markdown table of the metrics, with NDCG relative to the stronger popularity row."""
    base = max(results["popularity"]["ndcg"], results.get("popularity (all-time)", {}).get("ndcg", 0.0))
    lines = [f"| method | Recall@{k} | NDCG@{k} | coverage | NDCG vs best popularity |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['recall']:.4f} | {r['ndcg']:.4f} | {r['coverage']:.3f} | "
                     f"{(r['ndcg'] / base - 1) * 100:+.0f}% |")
    return "\n".join(lines)

