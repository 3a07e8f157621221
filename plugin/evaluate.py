"""``osreco eval``: measure every signal of the real sidecar, side by side, on MovieLens-100k.

Three tasks, each run through the sidecar's own Flask app (``create_app`` + the real
``SearchService``, in process) against the real OpenSearch node:

1. recommendation without a query (``GET /v1/recommend``): popularity, CF, content, blend;
2. personalized search (``POST /v1/search``) over templated English and Chinese queries:
   BM25 only, kNN only, hybrid, hybrid + CF, full osreco (intent filters + hybrid + CF);
3. intent parsing: exact match of the extracted filters on ``tests/golden/intents.jsonl``.

Every variant is a configuration of the same service (:data:`REC_VARIANTS`,
:data:`SEARCH_VARIANTS`), never a separate code path.

Example:
    >>> report = run_eval(EvalConfig.from_env(quick=True))     # doctest: +SKIP
    >>> report["search"]["variants"]["osreco"]["ndcg"]          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from osreco.ingest.connection import OpenSearchConfig, connect
from osreco.plugin.config import DEV_HMAC_KEY, FusionConfig, SidecarConfig
from osreco.plugin.errors import ConfigError
from osreco.plugin.eval_data import EvalQuery, Movie, QueryPair, generate_queries, sample_pairs
from osreco.plugin.eval_report import compute_targets
from osreco.plugin.eval_setup import (SplitData, ensure_bundle, ensure_item_index, read_movies, split_ratings,
                                      train_and_store_cf)
from osreco.plugin.metrics_ir import coverage, mean, ndcg_at_k, recall_at_k, violation_rate

log = logging.getLogger("osreco.eval")
TASKS = ("rec", "search", "intent")


@dataclass(frozen=True)
class Variant:
    """One configuration of the sidecar: overrides of ``SidecarConfig`` and ``FusionConfig``."""

    name: str
    config: Mapping[str, object] = field(default_factory=dict)
    fusion: Mapping[str, object] = field(default_factory=dict)


# Recommendation without a query: the same /v1/recommend, different signal weights.
REC_VARIANTS: tuple[Variant, ...] = (
    Variant("popularity", fusion={"cf_weight": 0.0}, config={"recommend_signals": ("popularity",)}),
    Variant("cf", config={"recommend_signals": ("cf",)}),
    Variant("content", config={"recommend_signals": ("content",)}),
    Variant("blend", config={"recommend_signals": ("cf", "content", "popularity")}),
)

# Personalized search: the same /v1/search; signals and the intent filters switched by config.
SEARCH_VARIANTS: tuple[Variant, ...] = (
    Variant("bm25", config={"use_intent": False}, fusion={"dense_weight": 0.0, "cf_weight": 0.0}),
    Variant("knn", config={"use_intent": False}, fusion={"bm25_weight": 0.0, "cf_weight": 0.0}),
    Variant("hybrid", config={"use_intent": False}, fusion={"cf_weight": 0.0}),
    Variant("hybrid+cf", config={"use_intent": False}),
    Variant("osreco", config={"use_intent": True}),
)


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
    users_per_query: int = 8
    seed: int = 7
    cf_factors: int = 64
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ConfigError(f"unknown tasks {unknown} (choose from {TASKS})", field="--tasks")
        for name in ("k", "users_per_query", "cf_factors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", field=name)
        if self.rec_users < 0 or self.max_queries < 0:
            raise ConfigError("rec_users and max_queries must be >= 0 (0 = all)", field="rec_users")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError("test_fraction must be in (0, 1)", field="test_fraction")

    @classmethod
    def from_env(cls, quick: bool = False, bundle_dir: str | None = None, golden_path: str | None = None,
                 **overrides: Any) -> "EvalConfig":
        """Defaults for a full run or the ``--quick`` subset; the node from ``OPENSEARCH_URL``.

        Raises:
            ConfigError: bad values; osreco.ingest ConfigError: no node configured.
        """
        from osreco.ingest.fixtures import recbole_dataset_dir
        from osreco.node import default_cache_dir

        sizes = dict(rec_users=40, max_queries=16, users_per_query=2) if quick else \
            dict(rec_users=0, max_queries=0, users_per_query=8)
        golden = Path(golden_path) if golden_path else Path(__file__).resolve().parents[1] / "tests" / "golden" / \
            "intents.jsonl"
        values: dict[str, Any] = dict(
            opensearch=OpenSearchConfig.from_env(), quick=quick, data_dir=recbole_dataset_dir(),
            bundle_dir=Path(bundle_dir) if bundle_dir else default_cache_dir() / "eval" / "minilm-fp32",
            golden_path=golden, **sizes)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def public(self) -> dict[str, object]:
        """JSON-friendly settings for the report."""
        out = asdict(self)
        out["opensearch"] = self.opensearch.url
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in out.items()}


def _bar(total: int, desc: str) -> tqdm:
    """A progress bar on stderr (rate and ETA), silent when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True)
