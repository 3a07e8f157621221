"""``osreco eval``: measure every signal of the real sidecar, side by side, on MovieLens-100k.

Five tasks, each run through the sidecar's own Flask app (``create_app`` + the real
``SearchService``, in process) against the real OpenSearch node:

1. ``rec``, ``similar``, ``listings`` (:mod:`osreco.evaluation.ranking`): the served
   ``GET /v1/recommend`` and its parts next to the offline CF models of the same split (binary
   and graded), similar items by next-item prediction, anonymous filtered listings (popularity
   order vs item-id order);
2. personalized search (``POST /v1/search``) over templated English and Chinese queries:
   BM25 only, kNN only, hybrid, hybrid + CF, full osreco (intent filters + hybrid + CF), and
   osreco with the taste weights tuned on validation users (:func:`tune_search`; the tables
   are on the other, test users);
3. intent parsing: exact match of the extracted filters on ``tests/golden/intents.jsonl``.

Every variant is a configuration of the same service (``ranking.REC_VARIANTS``,
:data:`SEARCH_VARIANTS`): fusion weights through ``FusionSettings``, and the three switches the
sidecar has no setting for yet (intent filters, recommendation weights, a content signal)
through :class:`osreco.evaluation.variants.EvalService`, which overrides as little as possible.

Example:
    >>> report = run_eval(EvalConfig.from_env(quick=True))     # doctest: +SKIP
    >>> report["search"]["variants"]["osreco"]["ndcg"]          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

from osreco.cf.privacy import pseudonymize
from osreco.evaluation.data import Movie, QueryPair, generate_queries, sample_pairs
from osreco.evaluation.intent import golden_parser, run_intent, score_intents, templated_intent_cases
from osreco.evaluation.ranking import (
    LISTING_VARIANTS,
    SIMILAR_VARIANTS,
    run_listings,
    run_recommend_task,
    run_similar,
    similar_cases,
)
from osreco.evaluation.report import compute_targets
from osreco.evaluation.setup import (
    SplitData,
    ensure_bundle,
    ensure_item_index,
    read_movies,
    split_ratings,
    train_and_store_cf,
)
from osreco.evaluation.tasks import pick_queries, run_search
from osreco.evaluation.tuning import LISTING_GRID, NEIGHBORS_GRID, grid_name, pick_by_class, split_users
from osreco.evaluation.variants import Variant
from osreco.ingest.connection import OpenSearchConfig, connect
from osreco.ingest.movielens import movielens_ratings_path
from osreco.plugin.config import DEV_HMAC_KEY, SidecarConfig
from osreco.plugin.errors import ConfigError
from osreco.plugin.taste import QUERY_CLASSES

log = logging.getLogger("osreco.eval")
TASKS = ("rec", "similar", "listings", "search", "intent")
EXTRA_TASKS = ("image", "voice")  # asked for by name only (osreco/evaluation/images.py trains its model once)


# Personalized search: the same POST /v1/search; signals and the intent filters switched.
SEARCH_VARIANTS: tuple[Variant, ...] = (
    Variant("bm25", encoder=False, use_intent=False, personalized=False, fusion={"cf_weight": 0.0}),
    Variant("knn", use_intent=False, personalized=False, fusion={"bm25_weight": 0.0, "cf_weight": 0.0}),
    Variant("hybrid", use_intent=False, personalized=False, fusion={"cf_weight": 0.0}),
    Variant("hybrid+cf", use_intent=False),
    Variant("intent+hybrid", personalized=False, fusion={"cf_weight": 0.0}),  # ablation: osreco without CF
    Variant("osreco"),
)
# Added to the search variants when the run has a cross-encoder (``--rerank-bundle``).
RERANK_VARIANT = Variant("osreco+rerank", rerank=True)
# The ablation of demoting a known user's seen items in filtered listings.
SEEN_KEPT_VARIANT = Variant("osreco (seen kept)", fusion={"demote_seen": False})


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (validated when built).

    Args:
        opensearch: the node.
        bundle_dir: the model bundle (exported once from the packaged MiniLM when missing).
        data_dir: the MovieLens-100k folder (``ml-100k.inter``).
        golden_path: the golden intent queries (JSONL).
        alias: the item index alias (ingested once, reused while ``_meta`` matches).
        tasks: which of ``rec``, ``search``, ``intent`` to run.
        quick: the CI subset.
        k: the metrics' cut-off.
        rec_users: test users for task 1 (0 = all).
        max_queries: queries for task 2 (0 = all), taken evenly across templates and languages.
        users_per_query: test users asked each query.
        seed: seed of the user samples.
        cf_factors: ALS factors (= the index's ``cf_dim``).
        test_fraction: share of each user's newest ratings held out.
        cf_model_dir: where the CF model trained on the split is saved (the sidecar loads it);
            default ``<bundle_dir>/../cf-<alias>``.
        rerank_bundle: a cross-encoder bundle; adds the ``osreco+rerank`` search variant.
        rerank_top_n: how many fused candidates it re-orders.
        validation_fraction: share of the test users whose search pairs tune the per-class
            taste weights (:func:`osreco.evaluation.tuning.split_users`); the others measure.
        zh_encoder: items also get ``embedding_zh`` from the Chinese encoder (bge-small-zh-v1.5,
            imported once from its Maven jar) and Chinese queries are embedded by it.

    Raises:
        ConfigError: an unknown task or a non-positive size.
    """

    opensearch: OpenSearchConfig
    bundle_dir: Path
    data_dir: Path
    golden_path: Path
    alias: str = "osreco-eval-ml100k"
    tasks: tuple[str, ...] = TASKS
    quick: bool = False
    k: int = 10
    rec_users: int = 0
    max_queries: int = 0
    users_per_query: int = 6
    seed: int = 7
    cf_factors: int = 64
    test_fraction: float = 0.2
    cf_model_dir: Path | None = None
    rerank_bundle: Path | None = None
    rerank_top_n: int = 50
    zh_encoder: bool = True
    validation_fraction: float = 0.3

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in (*TASKS, *EXTRA_TASKS)]
        if unknown or not self.tasks:
            raise ConfigError(f"unknown tasks {unknown} (choose from {TASKS + EXTRA_TASKS})", field="--tasks")
        for name in ("k", "users_per_query", "cf_factors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", field=name)
        if self.rec_users < 0 or self.max_queries < 0:
            raise ConfigError("rec_users and max_queries must be >= 0 (0 = all)", field="rec_users")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError("test_fraction must be in (0, 1)", field="test_fraction")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError("validation_fraction must be in (0, 1)", field="validation_fraction")

    @classmethod
    def from_env(cls, quick: bool = False, bundle_dir: str | None = None, golden_path: str | None = None,
                 **overrides: Any) -> EvalConfig:
        """Defaults for a full run or the ``--quick`` subset; the node from ``OPENSEARCH_URL``.

        Raises:
            ConfigError: bad values; osreco.ingest ConfigError: no node configured.
        """
        from osreco.ingest.movielens import movielens_dir
        from osreco.node import default_cache_dir

        sizes = dict(rec_users=40, max_queries=16, users_per_query=2) if quick else \
            dict(rec_users=0, max_queries=0, users_per_query=6)
        golden = Path(golden_path) if golden_path else Path(__file__).resolve().parents[2] / "tests" / "golden" / \
            "intents.jsonl"
        values: dict[str, Any] = dict(
            opensearch=OpenSearchConfig.from_env(), quick=quick, data_dir=movielens_dir(),
            bundle_dir=Path(bundle_dir) if bundle_dir else default_cache_dir() / "eval" / "minilm-fp32",
            golden_path=golden, **sizes)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("cf_model_dir", "rerank_bundle"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)

    def public(self) -> dict[str, object]:
        """JSON-friendly settings for the report."""
        out = asdict(self)
        out["opensearch"] = self.opensearch.url
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in out.items()}


# ---- the sidecar under test ---------------------------------------------------------------

def sidecar_config(config: EvalConfig, cf_model_dir: Path) -> SidecarConfig:
    """The base sidecar configuration the variants override (dev mode: no API keys)."""
    from osreco.evaluation.setup import ensure_zh_bundle

    return SidecarConfig(opensearch=config.opensearch, alias=config.alias, bundle_dir=str(config.bundle_dir),
                         bundle_zh_dir=str(ensure_zh_bundle()) if config.zh_encoder else None,
                         cf_model_dir=str(cf_model_dir), dev_mode=True, hmac_key=DEV_HMAC_KEY,
                         encoder_threads=1, search_timeout_s=10.0, request_timeout_s=30.0,
                         bundle_reload_s=0, rerank_top_n=config.rerank_top_n,
                         rerank_bundle=str(config.rerank_bundle) if config.rerank_bundle else None)


def variant_apps(base: SidecarConfig, variants: Sequence[Variant]) -> dict[str, Any]:
    """One Flask test client per variant, each over the real ``SearchService`` (see ``variants``).

    The encoder, CF model, cross-encoder and client are loaded once and shared: only the
    settings differ.

    Raises:
        ConfigError: the bundle did not load, or a variant overrides an unknown fusion setting.
    """
    from osreco.evaluation.variants import EvalService
    from osreco.plugin.app import create_app
    from osreco.plugin.metrics import Metrics
    from osreco.plugin.models import ServedModels
    from osreco.plugin.service import SearchService

    shared = SearchService.from_config(base, Metrics())
    if shared.encoder is None:
        raise ConfigError(f"the bundle did not load: {shared.models.encoder_error}", field="--bundle")
    clients: dict[str, Any] = {}
    for v in variants:
        try:
            cfg = replace(base, fusion=replace(base.fusion, **v.fusion),
                          recommend=replace(base.recommend, **v.recommend))
        except TypeError as e:
            raise ConfigError(f"variant {v.name}: {e}", field=v.name,
                              fix="the sidecar's FusionSettings or RecommendSettings changed: update the "
                                  "variants") from e
        models = ServedModels(Metrics(), encoder=shared.encoder if v.encoder else None,
                              encoder_error=None if v.encoder else "BM25-only variant: no encoder",
                              reranker=shared.models.reranker if v.rerank else None,
                              rerank_top_n=cfg.rerank_top_n, rerank_fields=cfg.rerank_fields,
                              named=shared.models.named if v.encoder else None,
                              named_errors=shared.models.named_errors)
        service = EvalService.from_parts(cfg, shared.transport.client, models.metrics, models,
                                         cf_model=shared.users.cf_model, fields=shared.fields,
                                         use_intent=v.use_intent, rec=v.rec, index_order=v.index_order)
        clients[v.name] = (create_app(cfg, services=service).test_client(), v)
    return clients


# ---- tuning the taste weights on validation users --------------------------------------------

def tune_search(base: SidecarConfig, pairs: Sequence[QueryPair], movies: Mapping[str, Movie],
                k: int) -> dict[str, Any]:
    """Measure the taste-weight grid on validation pairs and pick the weights per query class.

    Returns:
        ``{"pairs", "grid": {variant: {class: ndcg}}, "chosen": {class: weight},
        "neighbors_weight", "errors"}``; with no validation pairs, the configured weights.
    """
    f = base.fusion
    defaults = {"listing": (f.listing_cf_weight, f.neighbors_weight), "text": (f.cf_weight, 0.0),
                "title": (f.title_cf_weight, 0.0)}
    points = [(w, n) for w in LISTING_GRID for n in NEIGHBORS_GRID]
    scores: dict[tuple[float, float], dict[str, float]] = {}
    errors: dict[str, int] = {}
    if pairs:
        grid = tuple(Variant(grid_name(w, n), fusion={"listing_cf_weight": w, "cf_weight": w, "title_cf_weight": w,
                                                      "neighbors_weight": n}) for w, n in points)
        measured = run_search(variant_apps(base, grid), pairs, movies, k, class_variant=grid[0].name)
        by_class = cast(Mapping[str, Mapping[str, Mapping[str, float]]], measured["by_class"])
        # a class's weight is tuned where the neighbours list does not act (it joins listings only)
        scores = {(w, n): {c: by_class[c][grid_name(w, n)]["ndcg"] for c in by_class if c == "listing" or n == 0.0}
                  for w, n in points}
        errors = cast(dict[str, int], measured["errors"])
    chosen = pick_by_class(scores, QUERY_CLASSES, defaults)
    return {"pairs": len(pairs), "grid": {grid_name(w, n): s for (w, n), s in scores.items()},
            "chosen": {c: v[0] for c, v in chosen.items()}, "neighbors_weight": chosen["listing"][1],
            "errors": errors}


def tuned_variant(tuning: Mapping[str, Any]) -> Variant:
    """osreco with the per-class taste weights (and the listing's neighbours weight) chosen on validation."""
    chosen = tuning["chosen"]
    return Variant("osreco (tuned)", fusion={"listing_cf_weight": chosen["listing"], "cf_weight": chosen["text"],
                                             "title_cf_weight": chosen["title"],
                                             "neighbors_weight": tuning["neighbors_weight"]})


# ---- the whole run -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    """What the setup produced: the catalog as indexed, the split, the CF model folder."""

    movies: dict[str, Movie]
    split: SplitData
    cf_dir: Path
    dataset: dict[str, object]


def prepare(config: EvalConfig) -> Prepared:
    """Bundle (exported once), item index (ingested once), split, CF trained on the split and stored.

    Raises:
        osreco.exporter / osreco.ingest errors; opensearch-py errors when the node fails.
    """
    from osreco.exporter import Encoder

    client = connect(config.opensearch)
    encoder: Any = Encoder(ensure_bundle(config.bundle_dir), threads=1, device="cpu")
    if config.zh_encoder:
        from osreco.evaluation.setup import ensure_zh_bundle
        from osreco.ingest.encoders import TextEncoders

        encoder = TextEncoders(encoder, {"zh": Encoder(ensure_zh_bundle(), threads=1, device="cpu")})
    index = ensure_item_index(client, encoder, config.alias, config.cf_factors)
    movies = read_movies(client, config.alias)
    split = split_ratings(movielens_ratings_path(config.data_dir), frozenset(movies), config.test_fraction)
    cf_dir = config.cf_model_dir or config.bundle_dir.parent / f"cf-{config.alias}"
    cf_meta = train_and_store_cf(client, config.alias, split, DEV_HMAC_KEY, config.cf_factors, cf_dir)
    dataset = {"items": len(movies), "train_events": len(split.train), "test_users": len(split.held_out),
               "held_out": sum(len(v) for v in split.held_out.values()), "index": index,
               "cf": {k: cf_meta.get(k) for k in ("users", "items", "item_coverage", "items_from_content",
                                                  "write_failures")}}
    return Prepared(movies, split, cf_dir, dataset)


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Set up (when task 1 or 2 runs), then run the configured tasks.

    Args:
        config: the run's settings.

    Returns:
        The report (see :mod:`osreco.evaluation.report`), with ``targets``.

    Raises:
        ConfigError: bad settings or golden file; osreco.ingest / osreco.exporter errors for
        the index, the data or the bundle; opensearch-py errors when the node fails.
    """
    import random

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    report: dict[str, Any] = {"config": config.public()}
    prep = prepare(config) if {"rec", "similar", "listings", "search"} & set(config.tasks) else None
    if prep is not None:
        report["dataset"] = prep.dataset
        seconds["setup"] = time.perf_counter() - t0
        base = sidecar_config(config, prep.cf_dir)
    if prep is not None and {"rec", "similar"} & set(config.tasks):
        users = sorted(prep.split.held_out, key=int)
        if config.rec_users:
            users = sorted(random.Random(config.seed).sample(users, min(config.rec_users, len(users))), key=int)
        validation, test = split_users(users, config.validation_fraction, config.seed)
    if prep is not None and "rec" in config.tasks:
        t = time.perf_counter()
        report["recommendation"] = run_recommend_task(
            lambda vs: variant_apps(base, vs), prep.split, validation, test, config.k, len(prep.movies),
            prep.cf_dir, lambda user: pseudonymize(user, DEV_HMAC_KEY))
        seconds["recommendation"] = time.perf_counter() - t
    if prep is not None and "similar" in config.tasks:
        t = time.perf_counter()
        report["similar"] = run_similar(variant_apps(base, SIMILAR_VARIANTS), similar_cases(prep.split, test),
                                        config.k)
        report["similar"]["similar_cf_weight"] = base.recommend.similar_cf_weight
        seconds["similar"] = time.perf_counter() - t
    if prep is not None and "listings" in config.tasks:
        t = time.perf_counter()
        queries = pick_queries(generate_queries(prep.movies.values()), config.max_queries)
        report["listings"] = run_listings(variant_apps(base, LISTING_VARIANTS), queries, prep.split, prep.movies,
                                          config.k)
        seconds["listings"] = time.perf_counter() - t
    if prep is not None and "search" in config.tasks:
        t = time.perf_counter()
        queries = pick_queries(generate_queries(prep.movies.values()), config.max_queries)
        pairs = sample_pairs(queries, prep.split.held_out, prep.movies, config.users_per_query, config.seed)
        validation, _ = split_users(prep.split.held_out, config.validation_fraction, config.seed)
        held = set(validation)
        tuning = tune_search(base, [p for p in pairs if p.user_id in held], prep.movies, config.k)
        tuning["validation_users"] = len(validation)
        variants = SEARCH_VARIANTS + (tuned_variant(tuning), SEEN_KEPT_VARIANT) + \
            ((RERANK_VARIANT,) if config.rerank_bundle else ())
        report["search"] = run_search(variant_apps(base, variants), [p for p in pairs if p.user_id not in held],
                                      prep.movies, config.k)
        report["search"]["tuning"] = tuning
        report["search"]["query_examples"] = [{"q": q.text, "language": q.language,
                                               "constraints": q.constraints.as_dict()} for q in queries[:6]]
        seconds["search"] = time.perf_counter() - t
    if "intent" in config.tasks:
        t = time.perf_counter()
        parse = golden_parser(config.golden_path.with_name("intent_vocab.json"))
        report["intent"] = run_intent(config.golden_path, parse)
        if prep is not None:
            report["intent"]["templated"] = score_intents(
                templated_intent_cases(generate_queries(prep.movies.values())), parse, "task-2 templated queries")
        seconds["intent"] = time.perf_counter() - t
    if "image" in config.tasks:
        from osreco.evaluation.images import run_image_eval

        t = time.perf_counter()
        report["image"] = run_image_eval(config.opensearch)
        seconds["image"] = time.perf_counter() - t
    if "voice" in config.tasks:
        from osreco.evaluation.voice import run_voice_eval

        t = time.perf_counter()
        report["voice"] = run_voice_eval(config.opensearch, config.golden_path.parent, ensure_bundle(config.bundle_dir),
                                         report=log.info)
        seconds["voice"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    report["targets"] = (compute_targets(report) + list(report.get("image", {}).get("targets", []))
                         + list(report.get("voice", {}).get("targets", [])))
    return report
