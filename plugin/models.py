"""The models the sidecar serves: the query encoder (swapped in place by the hot-reload), the
encoders of named languages (``OSRECO_BUNDLE_ZH``: a Chinese query is embedded by it and searched
on ``embedding_zh``) and the optional cross-encoder reranker; all are CPU ``Encoder`` runtimes
over exported bundles.

A bundle that fails to load does not stop the sidecar: it serves BM25 only and says so (the
reason is kept for ``/readyz``). An explicitly configured reranker that fails to load is a
``ConfigError``. A failing encoder or reranker at request time is a degradation, not an error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from osreco.ingest.catalog import join_fields
from osreco.plugin.config import SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import ConfigError
from osreco.plugin.fusion import Candidate
from osreco.plugin.metrics import Metrics
from osreco.plugin.query import QueryOptions

log = logging.getLogger("osreco.plugin.service")

__all__ = ["ServedModels", "load_encoder", "load_reranker"]


class ServedModels:
    """The encoder being served (one reference, swapped under a lock) and the reranker.

    Args:
        metrics: ``osreco_bundle_info`` follows the served encoder; rerank sizes are observed.
        encoder: the query encoder, or None (BM25 only).
        encoder_error: why there is no encoder.
        reranker: the cross-encoder, or None.
        rerank_top_n: how many candidates the reranker scores.
        rerank_fields: the ``_source`` fields joined into the text the reranker reads.
        named: language -> the encoder of queries in that language (vectors in ``embedding_<language>``).
        named_errors: language -> why its configured encoder did not load (its queries use ``encoder``).
    """

    def __init__(self, metrics: Metrics, encoder: Any = None, encoder_error: str | None = None,
                 reranker: Any = None, rerank_top_n: int = 50, rerank_fields: tuple[str, ...] = ("title", "text"),
                 named: Mapping[str, Any] | None = None, named_errors: Mapping[str, str] | None = None):
        self.metrics, self.encoder, self.encoder_error, self.reranker = metrics, encoder, encoder_error, reranker
        self.named, self.named_errors = dict(named or {}), dict(named_errors or {})
        self.rerank_top_n, self.rerank_fields = rerank_top_n, rerank_fields
        self.on_swap: list[Callable[[], None]] = []   # run after a swap (drop what the old encoder made)
        self._lock = threading.Lock()
        metrics.serving(getattr(encoder, "artifact_id", None))

    @classmethod
    def from_config(cls, config: SidecarConfig, metrics: Metrics) -> ServedModels:
        """Load the bundle (failure: BM25 only, reported) and the reranker named by ``config``.

        Raises:
            ConfigError: the reranker does not load or is not a cross-encoder.
        """
        encoder, error = None, None
        if config.bundle_dir:
            try:
                encoder = load_encoder(config.bundle_dir, config.encoder_threads)
            except Exception as e:  # any load failure means BM25-only, reported
                error = f"bundle {config.bundle_dir} failed to load: {e}"
                log.error(error)
        else:
            error = "no bundle configured (OSRECO_BUNDLE)"
        named, named_errors = {}, {}
        if config.bundle_zh_dir:
            try:
                named["zh"] = load_encoder(config.bundle_zh_dir, config.encoder_threads)
            except Exception as e:  # any load failure: Chinese queries use the default encoder, reported
                named_errors["zh"] = f"bundle {config.bundle_zh_dir} failed to load: {e}"
                log.error(named_errors["zh"])
        return cls(metrics, encoder, error, load_reranker(config), config.rerank_top_n, config.rerank_fields,
                   named, named_errors)

    @property
    def artifact_id(self) -> str | None:
        """The served encoder's bundle id (None without an encoder)."""
        return getattr(self.encoder, "artifact_id", None)

    def swap(self, encoder: Any) -> None:
        """Serve ``encoder`` from now on (one reference assignment; in-flight requests keep theirs)."""
        with self._lock:
            self.encoder, self.encoder_error = encoder, None
        for drop in self.on_swap:
            drop()
        self.metrics.serving(encoder.artifact_id)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """The served encoder's query vectors of ``texts``."""
        return self.encoder.encode_queries(list(texts))

    def vector_field(self, language: str) -> str:
        """The knn field a query in ``language`` is searched on: ``embedding_<language>`` when that
        language has its own encoder, else ``embedding``."""
        return f"embedding_{language}" if language in self.named else "embedding"

    def search_options(self, options: QueryOptions, language: str) -> QueryOptions:
        """``options`` whose meaning kNN runs on :meth:`vector_field` of ``language``."""
        name = self.vector_field(language)
        return options if name == "embedding" else replace(options, fields=replace(options.fields, embedding=name))

    def embed_query(self, text: str, deg: Degradations, pending: str | None = None,
                    language: str = "en") -> np.ndarray | None:
        """The query's meaning vector, or ``None`` (BM25 only, reported) when the encoder fails.

        Args:
            text: the free text left after intent parsing (empty: no vector, nothing reported).
            deg: the request's degradations.
            pending: the bundle the index was rebuilt with while it is not served yet.
            language: the query's language; one with its own encoder is embedded by it (search
                its vector on :meth:`vector_field`).
        """
        if not text:
            return None
        named = self.named.get(language)
        if named is not None:
            try:
                return np.asarray(named.encode_queries([text])[0], dtype=np.float32)
            except Exception as e:  # any encoder failure degrades to BM25 only
                deg.add("encoder", f"BM25 only: the {language} encoder failed: {type(e).__name__}: {e}")
                return None
        if language in self.named_errors:
            deg.add(f"encoder_{language}", f"the default encoder embeds this query: {self.named_errors[language]}")
        encoder = self.encoder
        if encoder is None:
            deg.add("encoder", f"BM25 only: {self.encoder_error}")
            return None
        if pending is not None and pending != encoder.artifact_id:
            deg.add("encoder", f"BM25 only: the index was rebuilt with bundle {pending}; loading it "
                               f"(serving {encoder.artifact_id} until then)")
            return None
        try:
            return np.asarray(encoder.encode_queries([text])[0], dtype=np.float32)
        except Exception as e:  # any encoder failure degrades to BM25 only
            deg.add("encoder", f"BM25 only: the encoder failed: {type(e).__name__}: {e}")
            return None

    def item_text(self, source: Mapping[str, Any]) -> str:
        """The item text the reranker reads: ``rerank_fields`` joined like ingest's embed text."""
        return join_fields(source, self.rerank_fields)

    def rerank(self, text: str, ranked: list[Candidate], deg: Degradations
               ) -> tuple[list[Candidate], dict[str, float]]:
        """The cross-encoder's order of the first ``rerank_top_n`` candidates (the rest keep
        theirs, below) and their scores; on any failure the fused order, reported."""
        from osreco.exporter.rerank import rerank

        n = self.rerank_top_n
        texts = [self.item_text(c.source) for c in ranked[:n]]
        try:
            order, scores = rerank(self.reranker, text, texts, top_n=n, batch_size=n)
        except Exception as e:  # a failing reranker must not fail the search
            deg.add("reranker", f"fused order kept: the reranker failed: {type(e).__name__}: {e}")
            return ranked, {}
        self.metrics.reranked.observe(len(texts))
        head = {ranked[i].item_id: round(float(scores[i]), 6) for i in range(len(texts))}
        return [ranked[i] for i in order] + ranked[len(order):], head


def load_encoder(path: Any, threads: int, warm: bool = False) -> Any:
    """A CPU ``Encoder`` over ``path``; ``warm`` runs one query so the first request does not pay."""
    from osreco.exporter.encoder import Encoder

    encoder = Encoder(path, threads=threads, device="cpu")
    if warm:
        encoder.encode_queries(["warm up"])
    return encoder


def load_reranker(config: SidecarConfig) -> Any:
    """The cross-encoder bundle named by ``rerank_bundle`` (None when unset).

    Raises:
        ConfigError: the bundle does not load or is not a classification bundle.
    """
    if not config.rerank_bundle:
        return None
    try:
        reranker = load_encoder(config.rerank_bundle, config.encoder_threads)
    except Exception as e:  # an explicitly configured reranker must load
        raise ConfigError(f"OSRECO_RERANK_BUNDLE: reranker bundle {config.rerank_bundle} failed to load: {e}",
                          field="OSRECO_RERANK_BUNDLE") from e
    if reranker.manifest.task != "classification":
        raise ConfigError(f"OSRECO_RERANK_BUNDLE: reranker bundle {config.rerank_bundle} is a "
                          f"{reranker.manifest.task} bundle, not a cross-encoder", field="OSRECO_RERANK_BUNDLE",
                          fix="pass the --export folder of `osreco train reranker`")
    return reranker
