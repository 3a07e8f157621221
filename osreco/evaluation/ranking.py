"""The ranking tasks of ``osreco eval``: served recommendation next to offline CF, similar
items, and anonymous filtered listings.

All three are judged by the eval's time split (each user's newest ratings held out,
:func:`osreco.evaluation.setup.split_ratings`):

- **recommendation** (``rec``): ``GET /v1/recommend`` for each test user under the binary
  protocol (every held-out item relevant, every unseen item a candidate:
  ``ndcg_binary_at_k``, ``recall_uncapped_at_k``; the graded NDCG and capped recall too),
  next to the offline CF models trained on the same split in the same run (popularity, ALS,
  EASE item-item, their blend; :func:`osreco.evaluation.cf.rankings`). The served blend's
  weights are tuned on validation users (:func:`osreco.evaluation.tuning.split_users`) and
  every number is reported on the other, test users;
- **similar** (``similar``): next-item prediction. For a test user the query item is their
  last training item and the target their first held-out item; HR@k and NDCG@k of
  ``GET /v1/items/{id}/similar`` with co-engagement only, content only and the served blend
  (``OSRECO_SIMILAR_CF_WEIGHT``);
- **listings** (``listings``): each templated search query that the sidecar answers as a
  text-less filtered listing, asked without a user. Relevant: the items that satisfy the
  query and appear in any user's held-out part, graded by how many users hold them out;
  the served (popularity) order against the item-id order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from osreco.cf.interactions import Interaction
from osreco.evaluation.data import EvalQuery, Movie
from osreco.evaluation.metrics import mean, ndcg_binary_at_k, ndcg_graded_at_k
from osreco.evaluation.report import OFFLINE_PREFIX
from osreco.evaluation.setup import SplitData
from osreco.evaluation.tasks import _bar, _item_ids, run_recommendation, score_lists
from osreco.evaluation.variants import Variant

__all__ = ["REC_VARIANTS", "REC_GRID", "SIMILAR_VARIANTS", "LISTING_VARIANTS", "run_recommend_task",
           "offline_recommendation", "run_similar", "run_listings", "listing_grades", "similar_cases"]

Clients = Mapping[str, Any]
MakeClients = Callable[[Sequence[Variant]], Clients]

# The served /v1/recommend and its parts (RecommendSettings overrides).
_ONLY = {"als_weight": 0.0, "neighbor_weight": 0.0, "popularity_weight": 0.0, "content_weight": 0.0}
REC_VARIANTS: tuple[Variant, ...] = (
    Variant("popularity", recommend={**_ONLY, "popularity_weight": 1.0}),
    Variant("als", recommend={**_ONLY, "als_weight": 1.0}),
    Variant("item-item", recommend={**_ONLY, "neighbor_weight": 1.0}),
    Variant("osreco"),  # the served blend with the configured weights
)
# (neighbor_weight, popularity_weight) tried on the validation users; ALS keeps weight 1.
REC_GRID: tuple[tuple[float, float], ...] = tuple((n, p) for n in (0.5, 1.0, 2.0) for p in (0.0, 0.1))

# Similar items: the co-engagement weight (OSRECO_SIMILAR_CF_WEIGHT) at its ends; "blend" is the served one.
SIMILAR_VARIANTS: tuple[Variant, ...] = (
    Variant("co-engagement", recommend={"similar_cf_weight": 1.0}),
    Variant("content", recommend={"similar_cf_weight": 0.0}),
    Variant("blend"),
)
# Anonymous listings: the served popularity order and the item-id order.
LISTING_VARIANTS: tuple[Variant, ...] = (Variant("osreco", personalized=False),
                                         Variant("index order", personalized=False, index_order=True))


def _grid_name(neighbors: float, popularity: float) -> str:
    return f"neighbors={neighbors:g},popularity={popularity:g}"


# ---- recommendation ----------------------------------------------------------------------------

def offline_recommendation(model: Any, train: Sequence[Interaction], split: SplitData, users: Sequence[str],
                           key_of: Callable[[str], str], k: int, catalog_size: int) -> dict[str, dict[str, float]]:
    """The offline CF models trained on the split, scored like the served variants.

    Args:
        model: the run's ``CFModel`` (users known by their pseudonymous keys).
        train: the training events with the model's user keys.
        users: raw test user ids; ``key_of`` maps one to the model's key.

    Returns:
        ``{"offline <method>": metrics}`` (see :func:`osreco.evaluation.tasks.score_lists`).
    """
    from osreco.evaluation.cf import rankings

    keys = [key_of(u) for u in users]
    ranked = rankings(model, train, keys, k)
    return {OFFLINE_PREFIX + name: score_lists([by_key[key] for key in keys], split, users, k, catalog_size)
            for name, by_key in ranked.items()}


def run_recommend_task(make_clients: MakeClients, split: SplitData, validation: Sequence[str],
                       test: Sequence[str], k: int, catalog_size: int, cf_dir: Path,
                       key_of: Callable[[str], str]) -> dict[str, Any]:
    """Tune the served blend on ``validation``, then measure served and offline on ``test``.

    Returns:
        ``{"k", "users", "validation_users", "variants": {name: metrics}, "tuning": {"grid":
        {name: ndcg_binary}, "chosen": {...}}, "errors"}``; ``variants`` holds the served
        variants, ``osreco (tuned)`` and the ``offline *`` rows.
    """
    from osreco.cf.model import CFModel

    grid = tuple(Variant(_grid_name(n, p), recommend={"neighbor_weight": n, "popularity_weight": p})
                 for n, p in REC_GRID)
    chosen: dict[str, float] = {}
    scores: dict[str, float] = {}
    errors: dict[str, int] = {}
    if validation:
        tuned = run_recommendation(make_clients(grid), split, validation, k, catalog_size)
        scores = {name: m["ndcg_binary"] for name, m in tuned["variants"].items()}
        best = min(zip(grid, REC_GRID), key=lambda vp: (-scores[vp[0].name], vp[1]))[0]
        chosen = dict(best.recommend)
        errors.update({f"tuning {n}": c for n, c in tuned["errors"].items()})
    variants = REC_VARIANTS + ((Variant("osreco (tuned)", recommend=chosen),) if chosen else ())
    out = run_recommendation(make_clients(variants), split, test, k, catalog_size)
    model = CFModel.load(cf_dir)
    train = [Interaction(key_of(e.user_id), e.item_id, e.value, e.timestamp) for e in split.train]
    out["variants"].update(offline_recommendation(model, train, split, test, key_of, k, catalog_size))
    out["validation_users"] = len(validation)
    out["tuning"] = {"grid": scores, "chosen": chosen}
    out["errors"] = {**out["errors"], **errors}
    return out


# ---- similar items -------------------------------------------------------------------------------

def similar_cases(split: SplitData, users: Sequence[str]) -> list[tuple[str, str]]:
    """``(query item, target)`` per user: their last training item and their first held-out item."""
    return [(split.histories[u][-1], split.held_out_order[u][0]) for u in users
            if split.histories.get(u) and split.held_out_order.get(u)]


def run_similar(clients: Clients, cases: Sequence[tuple[str, str]], k: int) -> dict[str, Any]:
    """``GET /v1/items/{query}/similar?k=k`` per case and variant; HR@k and NDCG@k of the target.

    Returns:
        ``{"k", "cases", "variants": {name: {"hr", "ndcg"}}, "errors"}``.
    """
    ranked: dict[str, list[list[str]]] = {name: [] for name in clients}
    errors: dict[str, int] = {}
    with _bar(len(cases) * len(clients), "eval similar") as bar:
        for query, _ in cases:
            for name, (client, _v) in clients.items():
                resp = client.get(f"/v1/items/{query}/similar", query_string={"k": k})
                ranked[name].append(_item_ids(resp, "similar", errors, name))
                bar.update()
    variants = {name: {"hr": mean(1.0 if t in r[:k] else 0.0 for r, (_, t) in zip(lists, cases)),
                       "ndcg": mean(ndcg_binary_at_k(r, {t}, k) for r, (_, t) in zip(lists, cases))}
                for name, lists in ranked.items()}
    return {"k": k, "cases": len(cases), "variants": variants, "errors": errors}


# ---- anonymous listings --------------------------------------------------------------------------

def listing_grades(query: EvalQuery, split: SplitData, movies: Mapping[str, Movie]) -> dict[str, float]:
    """Item -> how many users hold it out, over the items that satisfy ``query``'s constraints."""
    grades: dict[str, float] = {}
    for held in split.held_out.values():
        for item in held:
            if item in movies and query.constraints.satisfied_by(movies[item]):
                grades[item] = grades.get(item, 0.0) + 1.0
    return grades


def run_listings(clients: Clients, queries: Sequence[EvalQuery], split: SplitData, movies: Mapping[str, Movie],
                 k: int, served: str = "osreco") -> dict[str, Any]:
    """Each query without a user, for every variant; only the queries ``served`` answers as a
    text-less listing (``query_class`` ``listing``) are scored.

    Returns:
        ``{"k", "queries", "skipped", "variants": {name: {"ndcg", "ndcg_binary"}}, "errors"}``.
    """
    ranked: dict[str, list[list[str]]] = {name: [] for name in clients}
    grades: list[dict[str, float]] = []
    errors: dict[str, int] = {}
    skipped = 0
    with _bar(len(queries) * len(clients), "eval listings") as bar:
        for query in queries:
            answers = {}
            for name, (client, _v) in clients.items():
                answers[name] = client.post("/v1/search", json={"q": query.text, "k": k})
                bar.update()
            first = answers[served]
            if first.status_code == 200 and first.get_json().get("query_class") != "listing":
                skipped += 1
                continue
            for name, resp in answers.items():
                ranked[name].append(_item_ids(resp, "listing", errors, name))
            grades.append(listing_grades(query, split, movies))
    variants = {name: {"ndcg": mean(ndcg_graded_at_k(r, g, k) for r, g in zip(lists, grades)),
                       "ndcg_binary": mean(ndcg_binary_at_k(r, g, k) for r, g in zip(lists, grades))}
                for name, lists in ranked.items()}
    return {"k": k, "queries": len(grades), "skipped": skipped, "variants": variants, "errors": errors,
            "relevance": "items satisfying the query held out by any user, graded by how many users hold them out"}

