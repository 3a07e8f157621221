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
from osreco.evaluation.metrics import coverage, mean, ndcg_graded_at_k, recall_capped_at_k, violation_rate
from osreco.evaluation.setup import SplitData

__all__ = ["run_recommendation", "run_search", "pick_queries"]

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

def run_recommendation(clients: Mapping[str, Any], split: SplitData, users: Sequence[str], k: int,
                       catalog_size: int) -> dict[str, object]:
    """``GET /v1/recommend`` for each test user and variant; graded by the held-out ratings.

    Returns:
        ``{"k", "users", "variants": {name: {"recall", "ndcg", "coverage"}}, "errors"}``.
    """
    ranked: dict[str, list[list[str]]] = {name: [] for name in clients}
    errors: dict[str, int] = {}
    with _bar(len(users) * len(clients), "eval recommend") as bar:
        for user in users:
            for name, (client, _) in clients.items():  # variants alternate: equal conditions
                resp = client.get("/v1/recommend", query_string={"user_id": user, "k": k})
                ranked[name].append(_item_ids(resp, "recommend", errors, name))
                bar.update()
    variants = {}
    for name, lists in ranked.items():
        grades = [split.held_out[u] for u in users]
        variants[name] = {"recall": mean(recall_capped_at_k(r, g, k) for r, g in zip(lists, grades)),
                          "ndcg": mean(ndcg_graded_at_k(r, g, k) for r, g in zip(lists, grades)),
                          "coverage": coverage(lists, catalog_size, k)}
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
               k: int) -> dict[str, object]:
    """``POST /v1/search`` for each (query, user) pair and variant.

    Returns:
        ``{"k", "queries", "pairs", "variants": {name: {"ndcg", "recall", "violation_rate"}},
        "by_language": {lang: {...}}, "by_template": {...}, "errors"}``.
    """
    ranked: dict[str, list[list[str]]] = {name: [] for name in clients}
    errors: dict[str, int] = {}
    with _bar(len(pairs) * len(clients), "eval search") as bar:
        for pair in pairs:
            for name, (client, variant) in clients.items():
                body = {"q": pair.query.text, "k": k, **({"user_id": pair.user_id} if variant.personalized else {})}
                ranked[name].append(_item_ids(client.post("/v1/search", json=body), "search", errors, name))
                bar.update()
    out: dict[str, object] = {"k": k, "queries": len({p.query.qid for p in pairs}), "pairs": len(pairs),
                              "variants": {n: _search_metrics(pairs, ranked[n], movies, k) for n in clients}}
    for key, attr in (("by_language", "language"), ("by_template", "template")):
        groups = sorted({getattr(p.query, attr) for p in pairs})
        out[key] = {g: {n: _search_metrics([p for p in pairs if getattr(p.query, attr) == g],
                                           [r for r, p in zip(ranked[n], pairs) if getattr(p.query, attr) == g],
                                           movies, k) for n in clients} for g in groups}
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
