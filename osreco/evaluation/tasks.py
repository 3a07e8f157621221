"""Tasks 1 and 2 of ``osreco eval``: ask every variant of the sidecar, score the answers.

Each variant is a Flask test client over the real ``SearchService`` (see
:mod:`osreco.evaluation.run`); the answers are scored with :mod:`osreco.evaluation.metrics`
(graded NDCG, capped recall, coverage, violation rate).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm import tqdm

from osreco.evaluation.data import Constraints, EvalQuery, Movie, QueryPair
from osreco.evaluation.metrics import (
    coverage,
    mean,
    ndcg_binary_at_k,
    ndcg_graded_at_k,
    recall_capped_at_k,
    recall_uncapped_at_k,
    violation_rate,
)
from osreco.evaluation.setup import SplitData

__all__ = ["run_recommendation", "score_lists", "run_search", "pick_queries"]

log = logging.getLogger("osreco.eval")


def _bar(total: int, desc: str) -> tqdm:
    """A progress bar on stderr (rate and ETA), silent when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def _item_ids(resp: Any, what: str, errors: dict[str, int], variant: str) -> list[str]:
    """Item ids of a sidecar response; a non-200 answer counts as an error and an empty list."""
    if resp.status_code != 200:
        errors[variant] = errors.get(variant, 0) + 1
        if errors[variant] <= 3:
            log.warning("%s %s answered %s: %s", variant, what, resp.status_code, resp.get_data(as_text=True)[:300])
        return []
    return [str(r["item_id"]) for r in resp.get_json()["results"]]


# ---- task 1: recommendation without a query -------------------------------------------------

def score_lists(lists: Sequence[list[str]], split: SplitData, users: Sequence[str], k: int,
                catalog_size: int) -> dict[str, float]:
    """Recommendation metrics of one ranked list per user against their held-out items.

    Returns:
        ``{"recall", "ndcg"}`` graded by the held-out ratings (capped recall), ``{"recall_binary",
        "ndcg_binary"}`` with every held-out item relevant (uncapped recall), and ``coverage``.
    """
    grades = [split.held_out[u] for u in users]
    return {"recall": mean(recall_capped_at_k(r, g, k) for r, g in zip(lists, grades)),
            "ndcg": mean(ndcg_graded_at_k(r, g, k) for r, g in zip(lists, grades)),
            "recall_binary": mean(recall_uncapped_at_k(r, g, k) for r, g in zip(lists, grades)),
            "ndcg_binary": mean(ndcg_binary_at_k(r, g, k) for r, g in zip(lists, grades)),
            "coverage": coverage(lists, catalog_size, k)}


def run_recommendation(clients: Mapping[str, Any], split: SplitData, users: Sequence[str], k: int,
                       catalog_size: int) -> dict[str, Any]:
    """``GET /v1/recommend`` for each test user and variant; scored by :func:`score_lists`.

    Returns:
        ``{"k", "users", "variants": {name: metrics}, "errors"}``.
    """
    ranked: dict[str, list[list[str]]] = {name: [] for name in clients}
    errors: dict[str, int] = {}
    with _bar(len(users) * len(clients), "eval recommend") as bar:
        for user in users:
            for name, (client, _) in clients.items():  # variants alternate: equal conditions
                resp = client.get("/v1/recommend", query_string={"user_id": user, "k": k})
                ranked[name].append(_item_ids(resp, "recommend", errors, name))
                bar.update()
    variants = {name: score_lists(lists, split, users, k, catalog_size) for name, lists in ranked.items()}
    return {"k": k, "users": len(users), "variants": variants, "errors": errors}


# ---- task 2: personalized search --------------------------------------------------------------

def _satisfies(constraints: Constraints, movies: Mapping[str, Movie]) -> Callable[[str], bool]:
    """Whether an item id names a catalog movie that meets ``constraints``."""
    return lambda item: item in movies and constraints.satisfied_by(movies[item])


def _search_metrics(pairs: Sequence[QueryPair], lists: Sequence[list[str]], movies: Mapping[str, Movie],
                    k: int) -> dict[str, float]:
    preds = [_satisfies(p.query.constraints, movies) for p in pairs]
    return {"ndcg": mean(ndcg_graded_at_k(r, p.grades, k) for r, p in zip(lists, pairs)),
            "recall": mean(recall_capped_at_k(r, p.grades, k) for r, p in zip(lists, pairs)),
            "violation_rate": violation_rate(lists, preds, k)}


def run_search(clients: Mapping[str, Any], pairs: Sequence[QueryPair], movies: Mapping[str, Movie],
               k: int, class_variant: str = "osreco") -> dict[str, object]:
    """``POST /v1/search`` for each (query, user) pair and variant.

    Args:
        class_variant: the variant whose reported ``query_class`` groups the pairs in
            ``by_class`` (the first variant when it is not asked).

    Returns:
        ``{"k", "queries", "pairs", "variants": {name: {"ndcg", "recall", "violation_rate"}},
        "by_language": {lang: {...}}, "by_template": {...}, "by_class": {class: {...}},
        "classes": {class: pairs}, "errors"}``.
    """
    ranked: dict[str, list[list[str]]] = {name: [] for name in clients}
    classes: dict[str, list[str]] = {name: [] for name in clients}
    errors: dict[str, int] = {}
    with _bar(len(pairs) * len(clients), "eval search") as bar:
        for pair in pairs:
            for name, (client, variant) in clients.items():
                body = {"q": pair.query.text, "k": k, **({"user_id": pair.user_id} if variant.personalized else {})}
                resp = client.post("/v1/search", json=body)
                ranked[name].append(_item_ids(resp, "search", errors, name))
                classes[name].append(str((resp.get_json() or {}).get("query_class", "unknown"))
                                     if resp.status_code == 200 else "error")
                bar.update()
    out: dict[str, object] = {"k": k, "queries": len({p.query.qid for p in pairs}), "pairs": len(pairs),
                              "variants": {n: _search_metrics(pairs, ranked[n], movies, k) for n in clients}}
    by_class = classes.get(class_variant) or next(iter(classes.values()), [])
    keys: dict[str, Callable[[int, QueryPair], str]] = {
        "by_language": lambda i, p: p.query.language, "by_template": lambda i, p: p.query.template,
        "by_class": lambda i, p: by_class[i]}
    for key, group_of in keys.items():
        labels = [group_of(i, p) for i, p in enumerate(pairs)]
        out[key] = {g: {n: _search_metrics([p for p, lab in zip(pairs, labels) if lab == g],
                                           [r for r, lab in zip(ranked[n], labels) if lab == g], movies, k)
                        for n in clients} for g in sorted(set(labels))}
    out["classes"] = {g: by_class.count(g) for g in sorted(set(by_class))}
    out["errors"] = errors
    return out


def pick_queries(queries: Sequence[EvalQuery], limit: int) -> list[EvalQuery]:
    """About ``limit`` queries spread evenly over the templates, each in both languages; all when 0.

    Queries that state the same constraints (one per language) are kept or dropped together.
    """
    if not limit or limit >= len(queries):
        return list(queries)
    slots: dict[object, list[EvalQuery]] = {}
    for q in queries:
        slots.setdefault((q.template, q.constraints), []).append(q)
    groups = list(slots.values())
    n = max(1, min(len(groups), limit // 2))
    step = len(groups) / n
    return [q for i in range(n) for q in groups[int(i * step)]]
