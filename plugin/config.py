"""The sidecar's one frozen configuration; the environment is read only in ``from_env``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin.errors import ConfigError

FUSION_METHODS = ("rrf", "linear")
RETRIEVAL_MODES = ("msearch", "hybrid")
DEV_HMAC_KEY = "osreco-dev-only-hmac-key"


@dataclass(frozen=True)
class Limits:
    """Request limits enforced before any work is done.

    Args:
        max_body_bytes: largest accepted request body.
        max_q_chars: longest accepted query text.
        max_k: most results per page (the API caps it at 100).
        max_page: deepest page number (1-based).
        max_depth: most results reachable by paging (``page * k``).
        max_events: most events in one batch.
    """

    max_body_bytes: int = 64 * 1024
    max_q_chars: int = 512
    max_k: int = 100
    max_page: int = 50
    max_depth: int = 1000
    max_events: int = 500

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_q_chars", "max_k", "max_page", "max_depth", "max_events"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", field=name)
        if self.max_k > 100:
            raise ConfigError("max_k cannot exceed 100", field="max_k", fix="set OSRECO_MAX_K <= 100")


@dataclass(frozen=True)
class FusionConfig:
    """How candidate lists are merged.

    Args:
        method: ``rrf`` (reciprocal rank) or ``linear`` (min-max normalized, weighted).
        bm25_weight, dense_weight: weights of the two text signals (linear fusion).
        cf_weight: strength of the collaborative boost (0 disables it).
        rrf_k: the RRF rank constant.
        candidates: how many candidates each signal contributes (more when paging deeper).
        ef_search: HNSW candidate list size of the kNN searches (raised to ``candidates``).
        mmr_lambda: relevance/diversity trade-off for MMR; ``None`` disables MMR.
    """

    method: str = "rrf"
    bm25_weight: float = 0.5
    dense_weight: float = 0.5
    cf_weight: float = 0.3
    rrf_k: int = 60
    candidates: int = 50
    ef_search: int = 100
    mmr_lambda: float | None = None

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ConfigError(f"fusion method {self.method!r} is not one of {FUSION_METHODS}",
                              field="OSRECO_FUSION")
        for name in ("bm25_weight", "dense_weight", "cf_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0", field=name)
        if self.rrf_k < 1 or not 1 <= self.candidates <= 1000 or self.ef_search < 1:
            raise ConfigError("rrf_k must be >= 1 and candidates in 1..1000", field="candidates")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError("mmr_lambda must be in [0, 1]", field="OSRECO_MMR_LAMBDA")


@dataclass(frozen=True)
class SidecarConfig:
    """Everything the sidecar needs, validated when built.

    Args:
        opensearch: node connection (basic auth, TLS CA path).
        alias: the item index alias that reads go through.
        bundle_dir: model bundle folder; ``None`` serves BM25 only (reported as a degradation).
        cf_model_dir: trained collaborative model (``osreco cf train``); ``None`` = no CF boost.
        store_prefix: prefix of the ``-users`` and ``-events`` indexes (default: the alias).
        facets: the index's keyword facet fields (the intent parser links query words to them).
        fusion: fusion settings.
        retrieval: ``msearch`` (fusion in the sidecar) or ``hybrid`` (neural-search pipeline).
        limits: request limits.
        api_keys_file: file of hashed API keys (see ``osreco apikey create``).
        dev_mode: explicit opt-out of API keys (never on by default).
        hmac_key: key that pseudonymizes user ids.
        llm_url: OpenAI-compatible chat endpoint for the optional LLM intent parser.
        llm_timeout_s: how long the LLM parser may take before the rules parser is used.
        search_timeout_s: per-request time budget sent to OpenSearch (``timeout``).
        request_timeout_s: client-side socket timeout; past it the sidecar answers 503.
        retry_after_s: value of ``Retry-After`` on 503.
        encoder_threads: onnxruntime intra-op threads.
        vocab_ttl_s: how long the facet vocabulary read from the index is cached.
        embed_vocabulary: also link query words to facet values by embedding similarity.
        bundles_root: where ``osreco promote`` installs bundles (``<root>/<artifact_id>``); the
            hot-reload looks there for the bundle the alias's index was rebuilt with. Default:
            the folder holding ``bundle_dir`` when ``bundle_dir`` is a symlink (``<root>/current``).
        bundle_reload_s: how often the alias's ``_meta.artifact_id`` is checked for a new
            bundle (also checked at once when a search sees hits from another index); 0 = never.
        rerank_bundle: a cross-encoder (classification) bundle that re-orders the top
            ``rerank_top_n`` fused candidates of a search with free text left after intent
            parsing (it reads the whole query); ``None`` = off.
        rerank_top_n: how many candidates the reranker scores (cost is linear in it).
        rerank_fields: the ``_source`` fields joined (". ") into the item text the reranker
            reads; keep them in the order the catalog was embedded with (ingest's embed_fields).

    Raises:
        ConfigError: on any invalid value, naming the setting.
    """

    opensearch: OpenSearchConfig
    alias: str
    bundle_dir: str | None = None
    cf_model_dir: str | None = None
    store_prefix: str | None = None
    facets: tuple[str, ...] = ("brand", "color", "category", "genres")
    fusion: FusionConfig = field(default_factory=FusionConfig)
    retrieval: str = "msearch"
    limits: Limits = field(default_factory=Limits)
    api_keys_file: str | None = None
    dev_mode: bool = False
    hmac_key: str | None = None
    llm_url: str | None = None
    llm_timeout_s: float = 2.0
    search_timeout_s: float = 2.0
    request_timeout_s: float = 5.0
    retry_after_s: int = 5
    encoder_threads: int = 1
    vocab_ttl_s: float = 300.0
    embed_vocabulary: bool = True
    bundles_root: str | None = None
    bundle_reload_s: float = 5.0
    rerank_bundle: str | None = None
    rerank_top_n: int = 50
    rerank_fields: tuple[str, ...] = ("title", "text", "brand", "color", "category", "genres", "year")

    def __post_init__(self) -> None:
        if not self.alias or self.alias != self.alias.lower() or "*" in self.alias:
            raise ConfigError(f"index alias {self.alias!r} must be a lowercase name without '*'",
                              field="OSRECO_INDEX")
        if not self.facets or not all(f and f == f.strip() for f in self.facets):
            raise ConfigError(f"facets {self.facets!r} must be non-empty names", field="OSRECO_FACETS")
        if self.retrieval not in RETRIEVAL_MODES:
            raise ConfigError(f"retrieval {self.retrieval!r} is not one of {RETRIEVAL_MODES}",
                              field="OSRECO_RETRIEVAL")
        if not self.dev_mode and not self.api_keys_file:
            raise ConfigError("API keys are required outside dev mode", field="OSRECO_API_KEYS_FILE",
                              fix="create one with `osreco apikey create`, or set OSRECO_DEV_MODE=1")
        if not self.dev_mode and not self.hmac_key:
            raise ConfigError("a user-id HMAC key is required outside dev mode", field="OSRECO_HMAC_KEY",
                              fix="set OSRECO_HMAC_KEY to a long random secret")
        if self.bundle_dir and not os.path.isdir(self.bundle_dir):
            raise ConfigError(f"bundle folder {self.bundle_dir} does not exist", field="OSRECO_BUNDLE")
        if self.cf_model_dir and not os.path.isdir(self.cf_model_dir):
            raise ConfigError(f"CF model folder {self.cf_model_dir} does not exist", field="OSRECO_CF_MODEL")
        if self.bundles_root and not os.path.isdir(self.bundles_root):
            raise ConfigError(f"OSRECO_BUNDLES_ROOT: bundles root {self.bundles_root} does not exist", field="OSRECO_BUNDLES_ROOT",
                              fix="pass the --bundles-root that `osreco promote` installs into")
        if self.bundle_reload_s < 0:
            raise ConfigError("OSRECO_BUNDLE_RELOAD_S: bundle_reload_s must be >= 0 (0 disables the hot-reload)",
                              field="OSRECO_BUNDLE_RELOAD_S")
        if self.rerank_bundle and not os.path.isfile(os.path.join(self.rerank_bundle, "manifest.json")):
            raise ConfigError(f"OSRECO_RERANK_BUNDLE: reranker bundle {self.rerank_bundle} has no manifest.json",
                              field="OSRECO_RERANK_BUNDLE",
                              fix="pass the --export folder of `osreco train reranker`")
        if not 1 <= self.rerank_top_n <= 1000:
            raise ConfigError(f"OSRECO_RERANK_TOP_N: rerank_top_n must be in 1..1000, got {self.rerank_top_n}",
                              field="OSRECO_RERANK_TOP_N")
        if not self.rerank_fields or not all(f and f == f.strip() for f in self.rerank_fields):
            raise ConfigError(f"OSRECO_RERANK_FIELDS: rerank fields {self.rerank_fields!r} must be non-empty names",
                              field="OSRECO_RERANK_FIELDS")
        for name in ("llm_timeout_s", "search_timeout_s", "request_timeout_s", "vocab_ttl_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0", field=name)
        if self.retry_after_s < 1 or self.encoder_threads < 1:
            raise ConfigError("retry_after_s and encoder_threads must be >= 1", field="retry_after_s")

    @property
    def prefix(self) -> str:
        """Prefix of the users and events indexes."""
        return self.store_prefix or self.alias

    @property
    def effective_bundles_root(self) -> str | None:
        """``bundles_root``, or the folder of a symlinked ``bundle_dir`` (``<root>/current``)."""
        if self.bundles_root:
            return self.bundles_root
        if self.bundle_dir and os.path.islink(self.bundle_dir.rstrip("/")):
            return os.path.dirname(os.path.abspath(self.bundle_dir.rstrip("/")))
        return None

    @property
    def effective_hmac_key(self) -> str:
        """The HMAC key; a fixed, documented key only in dev mode."""
        return self.hmac_key or DEV_HMAC_KEY

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> "SidecarConfig":
        """Build from ``OSRECO_*`` and ``OPENSEARCH_*`` variables; ``overrides`` win.

        Example:
            ``OSRECO_INDEX=products OSRECO_BUNDLE=/models/minilm-int8 OSRECO_API_KEYS_FILE=keys.json``
        """
        env = dict(os.environ if env is None else env)
        os_cfg = overrides.pop("opensearch", None) or OpenSearchConfig.from_env(env.get("OPENSEARCH_URL"))
        fusion = FusionConfig(
            method=env.get("OSRECO_FUSION", "rrf"),
            bm25_weight=_float(env, "OSRECO_BM25_WEIGHT", 0.5),
            dense_weight=_float(env, "OSRECO_DENSE_WEIGHT", 0.5),
            cf_weight=_float(env, "OSRECO_CF_WEIGHT", 0.3),
            candidates=_int(env, "OSRECO_CANDIDATES", 50),
            ef_search=_int(env, "OSRECO_EF_SEARCH", 100),
            mmr_lambda=_float(env, "OSRECO_MMR_LAMBDA", None))
        limits = Limits(max_body_bytes=_int(env, "OSRECO_MAX_BODY_BYTES", 64 * 1024),
                        max_q_chars=_int(env, "OSRECO_MAX_Q_CHARS", 512),
                        max_k=_int(env, "OSRECO_MAX_K", 100),
                        max_page=_int(env, "OSRECO_MAX_PAGE", 50))
        values: dict[str, object] = dict(
            opensearch=os_cfg, alias=env.get("OSRECO_INDEX", "osreco-items"),
            bundle_dir=env.get("OSRECO_BUNDLE") or None, cf_model_dir=env.get("OSRECO_CF_MODEL") or None,
            store_prefix=env.get("OSRECO_STORE_PREFIX") or None,
            facets=tuple(f.strip() for f in env.get("OSRECO_FACETS", "brand,color,category,genres").split(",")
                         if f.strip()),
            fusion=fusion, retrieval=env.get("OSRECO_RETRIEVAL", "msearch"), limits=limits,
            api_keys_file=env.get("OSRECO_API_KEYS_FILE") or None,
            dev_mode=env.get("OSRECO_DEV_MODE", "").lower() in ("1", "true", "yes"),
            hmac_key=env.get("OSRECO_HMAC_KEY") or None, llm_url=env.get("OSRECO_LLM_URL") or None,
            llm_timeout_s=_float(env, "OSRECO_LLM_TIMEOUT_S", 2.0),
            search_timeout_s=_float(env, "OSRECO_SEARCH_TIMEOUT_S", 2.0),
            request_timeout_s=_float(env, "OSRECO_REQUEST_TIMEOUT_S", 5.0),
            encoder_threads=_int(env, "OSRECO_ENCODER_THREADS", 1),
            embed_vocabulary=env.get("OSRECO_EMBED_VOCABULARY", "1").lower() not in ("0", "false", "no"),
            bundles_root=env.get("OSRECO_BUNDLES_ROOT") or None,
            bundle_reload_s=_float(env, "OSRECO_BUNDLE_RELOAD_S", 5.0),
            rerank_bundle=env.get("OSRECO_RERANK_BUNDLE") or None,
            rerank_top_n=_int(env, "OSRECO_RERANK_TOP_N", 50))
        if env.get("OSRECO_RERANK_FIELDS"):
            values["rerank_fields"] = tuple(f.strip() for f in env["OSRECO_RERANK_FIELDS"].split(",") if f.strip())
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _float(env: dict[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not a number", field=name) from e


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not an integer", field=name) from e
