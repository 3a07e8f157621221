"""The sidecar's one frozen configuration; the environment is read only in ``from_env``.

Every variable ``from_env`` reads is listed once, in :data:`SETTINGS` (name, meaning, default);
``osreco serve --help`` and the README's "Sidecar settings" table are generated from it
(``python -m osreco.plugin.config --write README.md`` rewrites the table).

It is longer than the other modules on purpose: the settings list, the frozen config and its
validation are one contract (each setting's name, default, parser and check side by side);
split, a new setting would have to be added in three files.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin.errors import ConfigError
from osreco.plugin.fusion import FusionSettings
from osreco.plugin.recommend import RecommendSettings

RETRIEVAL_MODES = ("msearch", "hybrid")
DEV_HMAC_KEY = "osreco-dev-only-hmac-key"


@dataclass(frozen=True)
class Setting:
    """One environment variable of the sidecar.

    Args:
        name: the variable.
        meaning: what it sets (markdown: backticks for literals).
        default: the value used when it is unset or empty, as written in the environment.
        unset: what an unset variable means when there is no default value.
    """

    name: str
    meaning: str
    default: str = ""
    unset: str = "none"

    @property
    def shown_default(self) -> str:
        """The default as the docs show it."""
        return f"`{self.default}`" if self.default else self.unset


SETTINGS: tuple[Setting, ...] = (
    Setting("OSRECO_INDEX", "item index alias that reads go through", "osreco-items"),
    Setting("OSRECO_BUNDLE", "model bundle folder", unset="BM25 only (reported)"),
    Setting("OSRECO_BUNDLE_ZH", "Chinese encoder bundle (bge-small-zh-v1.5, `osreco export --from-onnx`): Chinese "
            "queries are embedded by it and searched on `embedding_zh` (`osreco ingest ... --bundle-zh`)",
            unset="Chinese queries use OSRECO_BUNDLE"),
    Setting("OSRECO_IMAGE_BUNDLE", "image–text bundle (image + text tower): search by photo and text-to-image "
            "on `image_embedding`; one without an image tower fails at start-up", unset="no image search"),
    Setting("OSRECO_IMAGE_WEIGHT", "weight of the photo's kNN on `image_embedding` in a search with an image",
            "1.0"),
    Setting("OSRECO_TEXT_IMAGE_WEIGHT", "weight of the query text's kNN on `image_embedding` (text-to-image, "
            "through the image bundle's text tower)", "0.3"),
    Setting("OSRECO_MAX_IMAGE_BYTES", "largest accepted query image (multipart file or decoded base64)",
            "5242880"),
    Setting("OSRECO_MAX_IMAGE_PIXELS", "largest accepted query image in pixels (decompression-bomb check)",
            "40000000"),
    Setting("OSRECO_ASR_MODEL", "Whisper model folder in CTranslate2 format (faster-whisper, `pip install "
            "'osreco[asr]'`): `/v1/search` accepts spoken queries (`audio`); loaded at start-up",
            unset="no voice search"),
    Setting("OSRECO_ASR_THREADS", "CPU threads of one transcription", "1"),
    Setting("OSRECO_ASR_VOCAB_PROMPT", "`0`: do not prime speech recognition with the index's facet values "
            "(brands, colours, categories, genres)", "1"),
    Setting("OSRECO_MAX_AUDIO_BYTES", "largest accepted spoken query (multipart file or decoded base64)",
            "2097152"),
    Setting("OSRECO_MAX_AUDIO_S", "longest accepted spoken query, seconds (checked before it is decoded)", "30"),
    Setting("OSRECO_CF_MODEL", "trained CF model folder (`osreco cf train --model-dir`)", unset="no CF boost"),
    Setting("OSRECO_STORE_PREFIX", "prefix of the `-users` and `-events` indexes", unset="the index alias"),
    Setting("OSRECO_API_KEYS_FILE", "file of hashed API keys (`osreco apikey create`)",
            unset="required outside dev mode"),
    Setting("OSRECO_DEV_MODE", "`1`: no API keys and a fixed HMAC key; never in production", unset="off"),
    Setting("OSRECO_HMAC_KEY", "key that pseudonymizes user ids (never stored)", unset="required outside dev mode"),
    Setting("OSRECO_PLAYGROUND", "`1`: serve the browser playground at `/playground` (its API behind the API "
            "keys); always on in dev mode", unset="off"),
    Setting("OSRECO_FACETS", "facet fields the intent parser links query words to", "brand,color,category,genres"),
    Setting("OSRECO_EMBED_VOCABULARY", "`0`: link query words to facet values without embeddings", "1"),
    Setting("OSRECO_RETRIEVAL", "`msearch` (fusion in the sidecar) or `hybrid` (neural-search pipeline)",
            "msearch"),
    Setting("OSRECO_FUSION", "`rrf` or `linear` fusion of the signals", "rrf"),
    Setting("OSRECO_BM25_WEIGHT", "weight of BM25 in linear fusion", "0.5"),
    Setting("OSRECO_DENSE_WEIGHT", "weight of kNN in linear fusion", "0.5"),
    Setting("OSRECO_CF_WEIGHT", "strength of the collaborative boost (`0` = off); in search, the taste weight of "
            "free-text queries", "0.3"),
    Setting("OSRECO_LISTING_CF_WEIGHT", "taste weight of a known user's filtered listing (no free text left; "
            "tuned on validation users, docs/evaluation.md)", "0.5"),
    Setting("OSRECO_TITLE_CF_WEIGHT", "taste weight of a title lookup (the query names a catalog title)", "0.1"),
    Setting("OSRECO_DEMOTE_SEEN", "`0`: keep a known user's already-seen items in place in filtered listings "
            "(default: moved after the others; never in title lookups)", "1"),
    Setting("OSRECO_NEIGHBORS_WEIGHT", "weight of the items the stored neighbours (`cf_neighbors`) of a known "
            "user's recent items name, in filtered listings (`0` = not asked; tuned on validation users)", "0.5"),
    Setting("OSRECO_CANDIDATES", "candidates each signal contributes", "50"),
    Setting("OSRECO_RECOMMEND_ALS_WEIGHT", "`/v1/recommend`: weight of ALS taste (`user . item_factor`)", "1.0"),
    Setting("OSRECO_RECOMMEND_NEIGHBOR_WEIGHT", "`/v1/recommend`: weight of the co-engagement neighbours of the "
            "user's recent items (`cf_neighbors`)", "4.0"),
    Setting("OSRECO_RECOMMEND_POPULARITY_WEIGHT", "`/v1/recommend`: weight of the time-decayed popularity prior "
            "(it always breaks ties and orders users without taste)", "0.0"),
    Setting("OSRECO_RECOMMEND_CONTENT_WEIGHT", "`/v1/recommend`: weight of content (mean embedding of the "
            "user's items) for users without a CF vector", "0.3"),
    Setting("OSRECO_RECOMMEND_COLD_POPULARITY_WEIGHT", "`/v1/recommend`: popularity weight for a cold user "
            "(no trained or stored vector yet: their first events), when larger than the popularity weight", "0.1"),
    Setting("OSRECO_RECOMMEND_HISTORY", "`/v1/recommend`: newest history items whose neighbours count", "20"),
    Setting("OSRECO_RECOMMEND_HISTORY_DECAY", "`/v1/recommend`: weight ratio of consecutive history items "
            "(recency; `1` = all equal)", "0.9"),
    Setting("OSRECO_RECOMMEND_CANDIDATES", "`/v1/recommend`: candidates each source contributes", "50"),
    Setting("OSRECO_RECOMMEND_EXACT_MAX_CELLS", "`/v1/recommend`: catalogs with at most this many items x factors "
            "are scored exactly in numpy (else a filtered kNN on `cf_vector`)", "4000000"),
    Setting("OSRECO_SIMILAR_CF_WEIGHT", "`/v1/items/{id}/similar`: weight of co-engagement neighbours against "
            "content kNN, in [0, 1]", "0.9"),
    Setting("OSRECO_EF_SEARCH", "HNSW candidate list size of the kNN searches", "100"),
    Setting("OSRECO_MMR_LAMBDA", "MMR relevance/diversity trade-off in [0, 1]", unset="off"),
    Setting("OSRECO_LLM_URL", "OpenAI-compatible chat endpoint of the optional LLM intent parser", unset="off"),
    Setting("OSRECO_LLM_TIMEOUT_S", "seconds the LLM parser may take before the rules parser answers", "2"),
    Setting("OSRECO_LLM_MODE", "with `OSRECO_LLM_URL`: `combined` asks the LLM only for queries whose words the "
            "rules parser leaves unexplained; `llm` asks it for every query (rules on failure)", "combined"),
    Setting("OSRECO_SEARCH_TIMEOUT_S", "time budget sent to OpenSearch per request, seconds", "2"),
    Setting("OSRECO_REQUEST_TIMEOUT_S", "client-side timeout, seconds; past it the sidecar answers 503", "5"),
    Setting("OSRECO_ENCODER_THREADS", "onnxruntime intra-op threads", "1"),
    Setting("OSRECO_MAX_BODY_BYTES", "largest accepted request body", "65536"),
    Setting("OSRECO_MAX_Q_CHARS", "longest accepted query text", "512"),
    Setting("OSRECO_MAX_K", "most results per page (at most 100)", "100"),
    Setting("OSRECO_MAX_PAGE", "deepest page number", "50"),
    Setting("OSRECO_EVENT_FUTURE_S", "how many seconds past now an event's timestamp may lie (clock skew); "
            "later ones are a 400, and `osreco users expire` deletes stored ones", "300"),
    Setting("OSRECO_FOLDIN_QUEUE", "users each worker process may hold waiting for their online fold-in; "
            "a batch whose users do not fit is a 429 + `Retry-After` and stores nothing; at least "
            "`OSRECO_MAX_EVENTS`", "10000"),
    Setting("OSRECO_QUERY_LOG_QUEUE", "query-log documents (`<store prefix>-queries`, one per served search, "
            "recommend or similar) each worker process may hold for its background writer; more are dropped and "
            "counted (`osreco_query_log_total{result=\"dropped\"}`); `0` = no query log", "1000"),
    Setting("OSRECO_EXPLORE_FRACTION", "share of served pages (search, recommend, similar) whose results get "
            "random swaps of adjacent results (each item moves at most one place), logged in the query log so that "
            "`osreco learn` estimates the position bias without the ranking's confounding (docs/learning.md); "
            "`0` = off (`osreco eval` always serves without it)", "0"),
    Setting("OSRECO_BUNDLES_ROOT", "where `osreco promote` installs bundles; the sidecar hot-reloads the one "
            "the index was rebuilt with from here", unset="folder of a symlinked `OSRECO_BUNDLE`"),
    Setting("OSRECO_BUNDLE_RELOAD_S", "how often the alias's `_meta.artifact_id` is checked (also at once when "
            "a search sees a rebuilt index), and the fusion weights `osreco learn` promoted (settings store), "
            "the files of `OSRECO_CF_MODEL` and the target of `OSRECO_RERANK_BUNDLE` are re-read; `0` = never", "5"),
    Setting("OSRECO_RERANK_BUNDLE", "cross-encoder bundle (`osreco train reranker --export`) that re-orders "
            "the top N fused candidates of a search with free text left (it reads the whole query); name "
            "`<bundles_root>/reranker/current` to serve what `osreco learn --finetune` promotes", unset="off"),
    Setting("OSRECO_RERANK_TOP_N", "candidates the reranker scores (1..1000)", "50"),
    Setting("OSRECO_RERANK_FIELDS", "`_source` fields joined into the item text the reranker reads",
            "title,text,brand,color,category,genres,year"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


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
        event_future_s: how far past now (seconds) an event's timestamp may lie.
        max_image_bytes: largest accepted query image.
        max_image_pixels: largest accepted query image in pixels.
        max_audio_bytes: largest accepted spoken query.
        max_audio_s: longest accepted spoken query, seconds.
    """

    max_body_bytes: int = 64 * 1024
    max_q_chars: int = 512
    max_k: int = 100
    max_page: int = 50
    max_depth: int = 1000
    max_events: int = 500
    event_future_s: float = 300.0
    max_image_bytes: int = 5 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_audio_bytes: int = 2 * 1024 * 1024
    max_audio_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_q_chars", "max_k", "max_page", "max_depth", "max_events",
                     "max_image_bytes", "max_image_pixels", "max_audio_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", field=name)
        if not 0 < self.max_audio_s <= 600:
            raise ConfigError("OSRECO_MAX_AUDIO_S must be in (0, 600] seconds", field="OSRECO_MAX_AUDIO_S")
        if not 0 <= self.event_future_s <= 86400:
            raise ConfigError("OSRECO_EVENT_FUTURE_S must be in 0..86400 seconds", field="OSRECO_EVENT_FUTURE_S")
        if self.max_k > 100:
            raise ConfigError("max_k cannot exceed 100", field="max_k", fix="set OSRECO_MAX_K <= 100")


@dataclass(frozen=True)
class SidecarConfig:
    """Everything the sidecar needs, validated when built.

    Args:
        opensearch: node connection (basic auth, TLS CA path).
        alias: the item index alias that reads go through.
        bundle_dir: model bundle folder; ``None`` serves BM25 only (reported as a degradation).
        bundle_zh_dir: the Chinese encoder bundle: Chinese queries are embedded by it and
            searched on ``embedding_zh``; ``None``: they use ``bundle_dir`` on ``embedding``.
        cf_model_dir: trained collaborative model (``osreco cf train``); ``None`` = no CF boost.
        store_prefix: prefix of the ``-users`` and ``-events`` indexes (default: the alias).
        facets: the index's keyword facet fields (the intent parser links query words to them).
        fusion: fusion settings.
        retrieval: ``msearch`` (fusion in the sidecar) or ``hybrid`` (neural-search pipeline).
        limits: request limits.
        api_keys_file: file of hashed API keys (see ``osreco apikey create``).
        dev_mode: explicit opt-out of API keys (never on by default).
        playground: serve the browser playground (``/playground``) outside dev mode too.
        hmac_key: key that pseudonymizes user ids.
        llm_url: OpenAI-compatible chat endpoint for the optional LLM intent parser.
        llm_timeout_s: how long the LLM parser may take before the rules parser is used.
        llm_mode: ``combined`` or ``llm`` (see ``osreco.plugin.intent.llm.LLM_MODES``).
        search_timeout_s: per-request time budget sent to OpenSearch (``timeout``).
        request_timeout_s: client-side socket timeout; past it the sidecar answers 503.
        retry_after_s: value of ``Retry-After`` on 503.
        encoder_threads: onnxruntime intra-op threads.
        asr_model_dir: a Whisper folder in CTranslate2 format (``plugin/voice.py``); None = no voice search.
        asr_threads: CPU threads of one transcription.
        asr_vocab_prompt: prime speech recognition with the index's facet values.
        vocab_ttl_s: how long the facet vocabulary read from the index is cached.
        embed_vocabulary: also link query words to facet values by embedding similarity.
        bundles_root: where ``osreco promote`` installs bundles (``<root>/<artifact_id>``); the
            hot-reload looks there for the bundle the alias's index was rebuilt with. Default:
            the folder holding ``bundle_dir`` when ``bundle_dir`` is a symlink (``<root>/current``).
        bundle_reload_s: how often the alias's ``_meta.artifact_id`` is checked for a new
            bundle (also checked at once when a search sees hits from another index), and the
            learned fusion weights and the CF model files are re-read; 0 = never.
        rerank_bundle: a cross-encoder (classification) bundle that re-orders the top
            ``rerank_top_n`` fused candidates of a search with free text left after intent
            parsing (it reads the whole query); ``None`` = off.
        rerank_top_n: how many candidates the reranker scores (cost is linear in it).
        rerank_fields: the ``_source`` fields joined (". ") into the item text the reranker
            reads; keep them in the order the catalog was embedded with (ingest's embed_fields).
        foldin_queue: users each worker process may hold waiting for their online fold-in
            (``plugin/foldin.py``); a batch whose users do not fit is answered 429.
        query_log_queue: query-log documents each worker process may hold for its background
            writer (``plugin/querylog_writer.py``); more are dropped and counted; 0 = no query log.
        explore_fraction: share of served pages explored by random adjacent swaps
            (``plugin/explore.py``); 0 = off.
        recommend: weights and sizes of ``/v1/recommend`` and similar items.

    Raises:
        ConfigError: on any invalid value, naming the setting.
    """

    opensearch: OpenSearchConfig
    alias: str
    bundle_dir: str | None = None
    bundle_zh_dir: str | None = None
    image_bundle_dir: str | None = None
    cf_model_dir: str | None = None
    store_prefix: str | None = None
    facets: tuple[str, ...] = ("brand", "color", "category", "genres")
    fusion: FusionSettings = field(default_factory=FusionSettings)
    retrieval: str = "msearch"
    limits: Limits = field(default_factory=Limits)
    api_keys_file: str | None = None
    dev_mode: bool = False
    playground: bool = False
    hmac_key: str | None = None
    llm_url: str | None = None
    llm_timeout_s: float = 2.0
    llm_mode: str = "combined"
    search_timeout_s: float = 2.0
    request_timeout_s: float = 5.0
    retry_after_s: int = 5
    encoder_threads: int = 1
    asr_model_dir: str | None = None
    asr_threads: int = 1
    asr_vocab_prompt: bool = True
    vocab_ttl_s: float = 300.0
    embed_vocabulary: bool = True
    bundles_root: str | None = None
    bundle_reload_s: float = 5.0
    rerank_bundle: str | None = None
    rerank_top_n: int = 50
    rerank_fields: tuple[str, ...] = ("title", "text", "brand", "color", "category", "genres", "year")
    foldin_queue: int = 10000
    query_log_queue: int = 1000
    explore_fraction: float = 0.0
    recommend: RecommendSettings = field(default_factory=RecommendSettings)

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
        if self.bundle_zh_dir and not os.path.isdir(self.bundle_zh_dir):
            raise ConfigError(f"bundle folder {self.bundle_zh_dir} does not exist", field="OSRECO_BUNDLE_ZH",
                              fix="import one with `osreco export --from-onnx JAR -o DIR --language zh`")
        if self.asr_model_dir and not os.path.isdir(self.asr_model_dir):
            raise ConfigError(f"speech model folder {self.asr_model_dir} does not exist", field="OSRECO_ASR_MODEL",
                              fix="point it at a CTranslate2 Whisper folder (`osreco asr fixture --out DIR` "
                                  "builds the test one)")
        if self.asr_threads < 1:
            raise ConfigError("OSRECO_ASR_THREADS must be >= 1", field="OSRECO_ASR_THREADS")
        if self.image_bundle_dir and not os.path.isdir(self.image_bundle_dir):
            raise ConfigError(f"image bundle folder {self.image_bundle_dir} does not exist",
                              field="OSRECO_IMAGE_BUNDLE", fix="export one with `osreco train image-text` or "
                                                               "`osreco export CLIP_DIR`")
        if self.cf_model_dir and not os.path.isdir(self.cf_model_dir):
            raise ConfigError(f"CF model folder {self.cf_model_dir} does not exist", field="OSRECO_CF_MODEL")
        if self.bundles_root and not os.path.isdir(self.bundles_root):
            raise ConfigError(f"OSRECO_BUNDLES_ROOT: bundles root {self.bundles_root} does not exist",
                              field="OSRECO_BUNDLES_ROOT",
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
        if self.llm_mode not in ("combined", "llm"):
            raise ConfigError(f"OSRECO_LLM_MODE {self.llm_mode!r} must be combined or llm", field="OSRECO_LLM_MODE")
        for name in ("llm_timeout_s", "search_timeout_s", "request_timeout_s", "vocab_ttl_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0", field=name)
        if self.foldin_queue < max(1, self.limits.max_events):  # a full batch must fit an empty queue
            raise ConfigError(f"OSRECO_FOLDIN_QUEUE ({self.foldin_queue}) must be >= OSRECO_MAX_EVENTS "
                              f"({self.limits.max_events}): a batch of that many users would be refused (429) forever",
                              field="OSRECO_FOLDIN_QUEUE",
                              fix="raise OSRECO_FOLDIN_QUEUE or lower OSRECO_MAX_EVENTS")
        if self.query_log_queue < 0:
            raise ConfigError(f"OSRECO_QUERY_LOG_QUEUE must be >= 0 (0 = no query log), got {self.query_log_queue}",
                              field="OSRECO_QUERY_LOG_QUEUE")
        if not 0.0 <= self.explore_fraction <= 1.0:
            raise ConfigError(f"OSRECO_EXPLORE_FRACTION must be in [0, 1] (0 = off), got {self.explore_fraction}",
                              field="OSRECO_EXPLORE_FRACTION")
        if self.retry_after_s < 1 or self.encoder_threads < 1:
            raise ConfigError("retry_after_s and encoder_threads must be >= 1", field="retry_after_s")

    @property
    def playground_enabled(self) -> bool:
        """Whether ``/playground`` is served: in dev mode, or with ``OSRECO_PLAYGROUND=1``."""
        return self.dev_mode or self.playground

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
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> SidecarConfig:
        """Build from the variables of :data:`SETTINGS` and ``OPENSEARCH_*``; ``overrides`` win.

        Example:
            ``OSRECO_INDEX=products OSRECO_BUNDLE=/models/minilm-int8 OSRECO_API_KEYS_FILE=keys.json``
        """
        env = dict(os.environ if env is None else env)
        os_cfg = overrides.pop("opensearch", None) or OpenSearchConfig.from_env(env.get("OPENSEARCH_URL"))
        fusion = FusionSettings(
            method=_text(env, "OSRECO_FUSION"),
            bm25_weight=_float(env, "OSRECO_BM25_WEIGHT"),
            dense_weight=_float(env, "OSRECO_DENSE_WEIGHT"),
            cf_weight=_float(env, "OSRECO_CF_WEIGHT"),
            listing_cf_weight=_float(env, "OSRECO_LISTING_CF_WEIGHT"),
            title_cf_weight=_float(env, "OSRECO_TITLE_CF_WEIGHT"),
            demote_seen=_flag(env, "OSRECO_DEMOTE_SEEN"),
            neighbors_weight=_float(env, "OSRECO_NEIGHBORS_WEIGHT"),
            candidates=_int(env, "OSRECO_CANDIDATES"),
            ef_search=_int(env, "OSRECO_EF_SEARCH"),
            mmr_lambda=_optional_float(env, "OSRECO_MMR_LAMBDA"),
            image_weight=_float(env, "OSRECO_IMAGE_WEIGHT"),
            text_image_weight=_float(env, "OSRECO_TEXT_IMAGE_WEIGHT"))
        limits = Limits(max_body_bytes=_int(env, "OSRECO_MAX_BODY_BYTES"),
                        max_q_chars=_int(env, "OSRECO_MAX_Q_CHARS"),
                        max_k=_int(env, "OSRECO_MAX_K"),
                        max_page=_int(env, "OSRECO_MAX_PAGE"),
                        event_future_s=_float(env, "OSRECO_EVENT_FUTURE_S"),
                        max_image_bytes=_int(env, "OSRECO_MAX_IMAGE_BYTES"),
                        max_image_pixels=_int(env, "OSRECO_MAX_IMAGE_PIXELS"),
                        max_audio_bytes=_int(env, "OSRECO_MAX_AUDIO_BYTES"),
                        max_audio_s=_float(env, "OSRECO_MAX_AUDIO_S"))
        values: dict[str, object] = dict(
            opensearch=os_cfg, alias=_text(env, "OSRECO_INDEX"),
            bundle_dir=_text(env, "OSRECO_BUNDLE") or None,
            bundle_zh_dir=_text(env, "OSRECO_BUNDLE_ZH") or None,
            image_bundle_dir=_text(env, "OSRECO_IMAGE_BUNDLE") or None,
            cf_model_dir=_text(env, "OSRECO_CF_MODEL") or None,
            store_prefix=_text(env, "OSRECO_STORE_PREFIX") or None,
            facets=_names(env, "OSRECO_FACETS"),
            fusion=fusion, retrieval=_text(env, "OSRECO_RETRIEVAL"), limits=limits,
            api_keys_file=_text(env, "OSRECO_API_KEYS_FILE") or None,
            dev_mode=_flag(env, "OSRECO_DEV_MODE"),
            playground=_flag(env, "OSRECO_PLAYGROUND"),
            hmac_key=_text(env, "OSRECO_HMAC_KEY") or None, llm_url=_text(env, "OSRECO_LLM_URL") or None,
            llm_timeout_s=_float(env, "OSRECO_LLM_TIMEOUT_S"), llm_mode=_text(env, "OSRECO_LLM_MODE"),
            search_timeout_s=_float(env, "OSRECO_SEARCH_TIMEOUT_S"),
            request_timeout_s=_float(env, "OSRECO_REQUEST_TIMEOUT_S"),
            encoder_threads=_int(env, "OSRECO_ENCODER_THREADS"),
            asr_model_dir=_text(env, "OSRECO_ASR_MODEL") or None,
            asr_threads=_int(env, "OSRECO_ASR_THREADS"),
            asr_vocab_prompt=_flag(env, "OSRECO_ASR_VOCAB_PROMPT"),
            embed_vocabulary=_flag(env, "OSRECO_EMBED_VOCABULARY"),
            bundles_root=_text(env, "OSRECO_BUNDLES_ROOT") or None,
            bundle_reload_s=_float(env, "OSRECO_BUNDLE_RELOAD_S"),
            rerank_bundle=_text(env, "OSRECO_RERANK_BUNDLE") or None,
            rerank_top_n=_int(env, "OSRECO_RERANK_TOP_N"),
            rerank_fields=_names(env, "OSRECO_RERANK_FIELDS"),
            foldin_queue=_int(env, "OSRECO_FOLDIN_QUEUE"),
            query_log_queue=_int(env, "OSRECO_QUERY_LOG_QUEUE"),
            explore_fraction=_float(env, "OSRECO_EXPLORE_FRACTION"),
            recommend=RecommendSettings(
                als_weight=_float(env, "OSRECO_RECOMMEND_ALS_WEIGHT"),
                neighbor_weight=_float(env, "OSRECO_RECOMMEND_NEIGHBOR_WEIGHT"),
                popularity_weight=_float(env, "OSRECO_RECOMMEND_POPULARITY_WEIGHT"),
                content_weight=_float(env, "OSRECO_RECOMMEND_CONTENT_WEIGHT"),
                cold_popularity_weight=_float(env, "OSRECO_RECOMMEND_COLD_POPULARITY_WEIGHT"),
                history_items=_int(env, "OSRECO_RECOMMEND_HISTORY"),
                history_decay=_float(env, "OSRECO_RECOMMEND_HISTORY_DECAY"),
                candidates=_int(env, "OSRECO_RECOMMEND_CANDIDATES"),
                exact_max_cells=_int(env, "OSRECO_RECOMMEND_EXACT_MAX_CELLS"),
                similar_cf_weight=_float(env, "OSRECO_SIMILAR_CF_WEIGHT")))
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]  # one dict[str, object] for fields of many types


def _text(env: dict[str, str], name: str) -> str:
    """The variable's value, or its :data:`SETTINGS` default when unset or empty (every name is listed)."""
    return env.get(name) or _BY_NAME[name].default


def _names(env: dict[str, str], name: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in _text(env, name).split(",") if f.strip())


def _float(env: dict[str, str], name: str) -> float:
    return _number(name, _text(env, name))


def _optional_float(env: dict[str, str], name: str) -> float | None:
    raw = _text(env, name)
    return _number(name, raw) if raw else None


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not a number", field=name) from e


def _flag(env: dict[str, str], name: str) -> bool:
    """An on/off setting: ``1``/``true``/``yes`` or ``0``/``false``/``no`` (any case); else a ConfigError."""
    raw = _text(env, name).strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("", "0", "false", "no"):  # "": a setting that is off when unset
        return False
    raise ConfigError(f"{name}={raw!r} is not on or off", field=name, fix="use 1/true/yes or 0/false/no")


def _int(env: dict[str, str], name: str) -> int:
    raw = _text(env, name)
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(f"{name}={raw!r} is not an integer", field=name) from e


README_BEGIN = "<!-- sidecar-settings: generated from osreco.plugin.config.SETTINGS; " \
               "regenerate with `python -m osreco.plugin.config --write README.md` -->"
README_END = "<!-- /sidecar-settings -->"


def settings_markdown() -> str:
    """The README table of :data:`SETTINGS`."""
    rows = [f"| `{s.name}` | {s.meaning} | {s.shown_default} |" for s in SETTINGS]
    return "\n".join(["| variable | meaning | default |", "|---|---|---|", *rows])


def settings_help() -> list[tuple[str, str]]:
    """(name, meaning and default) rows of :data:`SETTINGS` for ``osreco serve --help``."""
    return [(s.name, f"{s.meaning} (default: {s.shown_default})".replace("`", "")) for s in SETTINGS]


def with_settings_table(readme: str) -> str:
    """``readme`` with the text between the settings markers replaced by :func:`settings_markdown`."""
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(readme):
        raise ValueError(f"the README has no {README_BEGIN} ... {README_END} markers")
    return pattern.sub(lambda _: f"{README_BEGIN}\n\n{settings_markdown()}\n\n{README_END}", readme, count=1)


def main(argv: list[str] | None = None) -> None:
    """``python -m osreco.plugin.config``: print the settings table, or rewrite it in a README."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", type=Path, metavar="README", help="rewrite the table in this file")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(settings_markdown() + "\n")
        return
    text = args.write.read_text(encoding="utf-8")
    args.write.write_text(with_settings_table(text), encoding="utf-8")


if __name__ == "__main__":
    main()
