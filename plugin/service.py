"""SearchService: the sidecar's orchestration, between the pure core and OpenSearch.

search: intent (rules or LLM) -> encode (BM25 only when the encoder fails) -> one ``_msearch``
(BM25 + kNN(meaning) + kNN(taste)) or one native ``hybrid`` query -> fuse -> CF boost ->
explain. Every degradation is logged, counted and listed in the response. An unreachable or
slow node is a ``NodeUnavailableError`` (503 + Retry-After); ``timed_out`` and shard failures
are reported with the results they spoiled.

Choices: the CF boost uses ``user . item_factor`` from the loaded CF model for every
candidate (the ``cf`` kNN list's scores when no model is loaded); a query with no free text
left (a filtered listing) is ordered by taste for a known user (additive boost); MMR uses the
CF item factors as item vectors; ``forget`` touches only ``<prefix>-users``/``-events``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import numpy as np
from opensearchpy import ConnectionError as OSConnectionError
from opensearchpy import ConnectionTimeout, OpenSearch, TransportError

from osreco.cf import store as cf_store
from osreco.cf import events as ev_store
from osreco.ingest.catalog import join_fields
from osreco.ingest.connection import connect
from osreco.cf.privacy import pseudonymize
from osreco.plugin import schemas
from osreco.plugin.config import SidecarConfig
from osreco.plugin.errors import (ConfigError, NodeUnavailableError, NotFoundError, NotReadyError,
                                  RequestError, UpstreamError)
from osreco.plugin.explain import HistoryItem, explain
from osreco.plugin.fusion import (Candidate, FusionOptions, SignalResult, apply_sort, candidates_from_hybrid,
                                  fuse, mmr, read_msearch)
from osreco.plugin.intent.parser import IntentOptions, parse_intent
from osreco.plugin.intent.types import FacetMatch, FieldMap, Intent, RangeFilter
from osreco.plugin.metrics import Metrics
from osreco.plugin.query import QueryOptions, build_hybrid_search, build_msearch, build_recommend, build_similar
from osreco.plugin.reload import BundleReloader
from osreco.plugin.intent.vocab import Vocabulary, vocabulary_from_response, vocabulary_request

log = logging.getLogger("osreco.plugin.service")
T = TypeVar("T")
_VOCAB_EMBED_MAX = 1000  # embed the facet vocabulary only when it is this small


@dataclass
class Degradations:
    """What went wrong but was served around; each entry is logged and counted."""

    metrics: Metrics
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        log.warning("degraded (%s): %s", kind, message)
        self.metrics.degraded(kind)
        self.items.append({"kind": kind, "message": message})


@dataclass(frozen=True)
class UserContext:
    """A known user: pseudonym, taste vector (may be None) and recent history."""

    key: str
    vector: np.ndarray | None
    history: tuple[str, ...]


class SearchService:
    """Composes intent, encoder, OpenSearch, fusion and the user store (see module doc)."""

    def __init__(self, config: SidecarConfig, client: OpenSearch, metrics: Metrics,
                 encoder: Any = None, cf_model: Any = None, encoder_error: str | None = None,
                 fields: FieldMap = FieldMap(), reranker: Any = None):
        self.config, self.client, self.metrics = config, client, metrics
        self.encoder, self.cf_model, self.encoder_error = encoder, cf_model, encoder_error
        self.reranker = reranker
        self.reloader: BundleReloader | None = None
        self.metrics.serving(getattr(encoder, "artifact_id", None))
        self.fields = fields
        self.store = cf_store.StoreConfig(prefix=config.prefix, item_index=config.alias)
        self._vocab: Vocabulary | None = None
        self._vocab_at = 0.0
        self._lock = threading.Lock()
        self._pipelines: set[str] = set()

    @classmethod
    def from_config(cls, config: SidecarConfig, metrics: Metrics) -> "SearchService":
        """Connect to the node, load the bundle and the CF model named by ``config``.

        A bundle that fails to load does not stop the sidecar: it serves BM25 only and says
        so (``/readyz`` reports the reason). A CF model that fails to load is a ConfigError.
        """
        client = connect(replace(config.opensearch, timeout_s=config.request_timeout_s),
                         max_retries=1, retry_on_timeout=False, pool_maxsize=64)
        encoder, error = None, None
        if config.bundle_dir:
            try:
                encoder = _load_encoder(config.bundle_dir, config.encoder_threads)
            except Exception as e:  # noqa: BLE001 - any load failure means BM25-only, reported
                error = f"bundle {config.bundle_dir} failed to load: {e}"
                log.error(error)
        else:
            error = "no bundle configured (OSRECO_BUNDLE)"
        cf_model = None
        if config.cf_model_dir:
            from osreco.cf.model import CFModel

            cf_model = CFModel.load(config.cf_model_dir)
        service = cls(config, client, metrics, encoder=encoder, cf_model=cf_model, encoder_error=error,
                      fields=FieldMap(facets=config.facets), reranker=_load_reranker(config))
        if config.bundle_dir and config.bundle_reload_s > 0:
            service.watch_bundles().start()
        return service

    # ---- hot-reload of the bundle ------------------------------------------------------

    def watch_bundles(self) -> BundleReloader:
        """The reloader that keeps the encoder equal to the alias's ``_meta.artifact_id``
        (see ``osreco.plugin.reload``); not started here."""
        threads = self.config.encoder_threads
        self.reloader = BundleReloader(
            read_alias=self._alias_artifact, served=lambda: getattr(self.encoder, "artifact_id", None),
            load=lambda path: _load_encoder(path, threads, warm=True), swap=self.swap_encoder,
            bundle_dir=self.config.bundle_dir, bundles_root=self.config.effective_bundles_root,
            interval_s=self.config.bundle_reload_s or 5.0,
            on_result=lambda r: self.metrics.bundle_reloads.labels(r).inc())
        return self.reloader

    def _alias_artifact(self) -> tuple[str, str | None]:
        """The concrete index behind the alias and its ``_meta.artifact_id``."""
        mappings = self.client.indices.get_mapping(index=self.config.alias)
        index, body = sorted(mappings.items())[-1]
        return index, (body.get("mappings", {}).get("_meta") or {}).get("artifact_id")

    def swap_encoder(self, encoder: Any, path: Any = None) -> None:
        """Serve ``encoder`` from now on (one reference assignment; in-flight requests keep theirs)."""
        with self._lock:
            self.encoder, self.encoder_error = encoder, None
            self._vocab = None     # its vectors came from the previous encoder
        self.metrics.serving(encoder.artifact_id)

    # ---- node access -------------------------------------------------------------------

    def node(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the node; map transport failures onto the plugin's errors.

        Raises:
            NodeUnavailableError: connection refused/reset, timeout, 429/502/503/504.
            NotReadyError: the index (alias) does not exist.
            UpstreamError: any other error status.
        """
        retry = self.config.retry_after_s
        try:
            return fn(*args, **kwargs)
        except ConnectionTimeout as e:
            raise NodeUnavailableError(f"OpenSearch did not answer {what} within "
                                       f"{self.config.request_timeout_s}s", retry_after_s=retry,
                                       fix="retry later; check the node's load") from e
        except OSConnectionError as e:
            raise NodeUnavailableError(f"OpenSearch is unreachable ({what})", retry_after_s=retry,
                                       fix="retry later; check that the node is running") from e
        except TransportError as e:
            status = e.status_code if isinstance(e.status_code, int) else 0
            if status in (429, 502, 503, 504):
                raise NodeUnavailableError(f"OpenSearch is overloaded or unavailable ({what}: {status})",
                                           retry_after_s=retry) from e
            if status == 404 and "index_not_found" in str(e.error):
                raise NotReadyError(f"index {self.config.alias!r} does not exist ({what})",
                                    fix="ingest a catalog with `osreco ingest` first") from e
            raise UpstreamError(f"OpenSearch refused {what}: {status} {e.error}") from e

    # ---- readiness ---------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """Node reachable, alias present, bundle ``artifact_id`` equal to the index ``_meta``.

        Raises:
            NotReadyError: naming what does not match and how to fix it.
        """
        try:
            self.node("ping", self.client.info)
            mappings = self.node("readiness", self.client.indices.get_mapping, index=self.config.alias)
        except NodeUnavailableError as e:
            raise NotReadyError(str(e)) from e
        if len(mappings) != 1:
            raise NotReadyError(f"alias {self.config.alias!r} points at {len(mappings)} indexes",
                                fix="point the alias at exactly one index")
        index, body = next(iter(mappings.items()))
        meta = body.get("mappings", {}).get("_meta") or {}
        if self.encoder is None:
            raise NotReadyError(f"the encoder is not loaded: {self.encoder_error}",
                                fix="set OSRECO_BUNDLE to the bundle the index was built with")
        if meta.get("artifact_id") != self.encoder.artifact_id and self.reloader is not None:
            served = self.encoder.artifact_id
            if self.reloader.check() != "loaded":
                raise NotReadyError(
                    f"bundle artifact_id {served} != index {index} _meta.artifact_id {meta.get('artifact_id')}, "
                    f"and the hot-reload could not switch: {self.reloader.last_error}",
                    fix="install the bundle the index was built with where the sidecar looks "
                        "(OSRECO_BUNDLES_ROOT), or re-ingest with the served bundle")
        if meta.get("artifact_id") != self.encoder.artifact_id:
            raise NotReadyError(
                f"bundle artifact_id {self.encoder.artifact_id} != index {index} _meta.artifact_id "
                f"{meta.get('artifact_id')}: the query vectors would not match the item vectors",
                fix="serve the bundle the index was built with, or re-ingest with this bundle")
        if self.cf_model is not None and meta.get("cf_dim") not in (None, self.cf_model.dim):
            raise NotReadyError(f"CF model dim {self.cf_model.dim} != index {index} _meta.cf_dim "
                                f"{meta.get('cf_dim')}", fix="train the CF model with --factors <cf_dim>")
        return {"index": index, "alias": self.config.alias, "artifact_id": self.encoder.artifact_id,
                "cf_model": self.cf_model is not None,
                "reranker": getattr(self.reranker, "artifact_id", None)}

    # ---- building blocks ---------------------------------------------------------------

    def vocabulary(self) -> Vocabulary:
        """The facet vocabulary, read by aggregation and cached for ``vocab_ttl_s``."""
        with self._lock:
            if self._vocab is not None and time.monotonic() - self._vocab_at < self.config.vocab_ttl_s:
                return self._vocab
            resp = self.node("vocabulary", self.client.search, index=self.config.alias,
                             body=vocabulary_request(self.fields))
            vocab = vocabulary_from_response(resp, self.fields)
            if (self.config.embed_vocabulary and self.encoder is not None
                    and 0 < len(vocab.pairs()) <= _VOCAB_EMBED_MAX):
                try:
                    vocab = vocab.with_vectors(self._embed_texts)
                except Exception as e:  # noqa: BLE001 - exact/fuzzy matching still works
                    log.warning("vocabulary embedding failed: %s", e)
            self._vocab, self._vocab_at = vocab, time.monotonic()
            return vocab

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_queries(list(texts))

    def parse(self, req: schemas.SearchRequest) -> Intent:
        """The query's intent plus the request's explicit filters."""
        vocab = self.vocabulary()
        embed = self._embed_texts if vocab.vectors is not None else None
        intent = self._llm_intent(req, vocab) or parse_intent(
            req.q, vocab, req.language, options=IntentOptions(fields=self.fields), embed=embed)
        facets, ranges = self.request_filters(req.filters)
        if facets or ranges:
            intent = replace(intent, filters=intent.filters + facets, ranges=intent.ranges + ranges)
        return intent

    def _llm_intent(self, req: schemas.SearchRequest, vocab: Vocabulary) -> Intent | None:
        if not self.config.llm_url:
            return None
        from osreco.plugin.intent.parser import llm as llm_intent# optional backend, imported only when configured

        return llm_intent.parse_with_llm(req.q, vocab, req.language, url=self.config.llm_url,
                                         timeout_s=self.config.llm_timeout_s, fields=self.fields)

    def request_filters(self, filters: tuple[tuple[str, schemas.FilterValue], ...]
                        ) -> tuple[tuple[FacetMatch, ...], tuple[RangeFilter, ...]]:
        """Explicit request filters as intent parts.

        Raises:
            RequestError: a filter names no facet or numeric field, or has the wrong shape.
        """
        facets: list[FacetMatch] = []
        ranges: list[RangeFilter] = []
        numeric = (*self.fields.numeric, self.fields.popularity)
        for name, value in filters:
            if name in self.fields.facets and isinstance(value, tuple):
                facets.extend(FacetMatch(name, v, "request", v) for v in value)
            elif name in numeric and isinstance(value, dict):
                ranges.append(RangeFilter(name, **value))
            else:
                raise RequestError(f"filter {name!r} is not a facet {self.fields.facets} with values "
                                   f"or a numeric field {numeric} with a range", field=f"filters.{name}")
        return tuple(facets), tuple(ranges)

    def embed_query(self, text: str, deg: Degradations) -> np.ndarray | None:
        """The query's meaning vector, or ``None`` (BM25 only, reported) when the encoder fails."""
        if not text:
            return None
        encoder = self.encoder
        if encoder is None:
            deg.add("encoder", f"BM25 only: {self.encoder_error}")
            return None
        pending = self.reloader.pending if self.reloader is not None else None
        if pending is not None and pending != encoder.artifact_id:
            deg.add("encoder", f"BM25 only: the index was rebuilt with bundle {pending}; loading it "
                               f"(serving {encoder.artifact_id} until then)")
            return None
        try:
            return np.asarray(encoder.encode_queries([text])[0], dtype=np.float32)
        except Exception as e:  # noqa: BLE001 - any encoder failure degrades to BM25 only
            deg.add("encoder", f"BM25 only: the encoder failed: {type(e).__name__}: {e}")
            return None

    def user(self, user_id: str | None, deg: Degradations) -> UserContext | None:
        """The user's pseudonym, vector and history; ``None`` (reported) when the store fails."""
        if user_id is None:
            return None
        key = pseudonymize(user_id, self.config.effective_hmac_key)
        try:
            doc = cf_store.read_user(self.client, self.store, key)
        except (TransportError, OSError) as e:
            deg.add("user_store", f"not personalized: the user store failed: {type(e).__name__}: {e}")
            return None
        vector = np.asarray(doc["cf_vector"], dtype=np.float32) if doc and doc.get("cf_vector") else None
        if vector is None and self.cf_model is not None:
            vector = self.cf_model.user_vector(key)
        if vector is not None and not np.any(vector):
            vector = None
        return UserContext(key, vector, tuple(doc.get("history") or ()) if doc else ())

    # ---- search, recommend, similar ----------------------------------------------------

    def search(self, req: schemas.SearchRequest) -> dict[str, Any]:
        """One search request end to end (see the module docstring)."""
        ep, timings, deg = "/v1/search", {}, Degradations(self.metrics)
        with self.metrics.stage(ep, "parse", timings):
            intent = self.parse(req)
        if intent.fallback_reason:
            deg.add("llm_parser", f"rules parser used: {intent.fallback_reason}")
        with self.metrics.stage(ep, "embed", timings):
            qvec = self.embed_query(intent.text, deg)
        user = self.user(req.user_id, deg)
        uvec = user.vector if user is not None else None
        user = user if uvec is not None else None
        depth = max(self.config.fusion.candidates, req.page * req.k)
        hybrid = self.config.retrieval == "hybrid" and qvec is not None
        with self.metrics.stage(ep, "search", timings):
            if hybrid:
                fused, lists, partial = self._hybrid(intent, qvec, user, depth, deg)
            else:
                lists, partial = self._msearch(intent, qvec, user, depth, deg)
        with self.metrics.stage(ep, "fuse", timings):
            if hybrid:
                affinity = self.affinity(user, {c.item_id for c in fused})
                ranked = apply_sort(fused, intent.sort, self.fields)
            else:
                ranked, affinity = self.rank(lists, user, intent, self._settings(intent, user))
        reranked: dict[str, float] = {}
        if self.reranker is not None and intent.text and ranked:
            # only when free text is left: a query that is all constraints is already satisfied
            # by the filters and ordered by taste, which a user-agnostic cross-encoder would undo
            # (osreco eval: NDCG@10 0.241 -> 0.174 when it reranks those too). It reads the whole
            # query, as in training.
            with self.metrics.stage(ep, "rerank", timings):
                ranked, reranked = self.rerank(req.q.strip(), ranked, deg)
        with self.metrics.stage(ep, "explain", timings):
            results = self.present(ranked[req.offset:req.offset + req.k], intent, user,
                                   lists.get("history"), affinity, req.offset)
        for r in results:
            r["rerank_score"] = reranked.get(r["item_id"])
        return {"results": results, "k": req.k, "page": req.page, "intent": intent.describe(),
                "parser": intent.parser, "retrieval": "hybrid" if hybrid else "msearch",
                "personalized": user is not None, "degradations": deg.items, **partial,
                "timings_ms": timings}

    def rerank(self, text: str, ranked: list[Candidate], deg: Degradations
               ) -> tuple[list[Candidate], dict[str, float]]:
        """The cross-encoder's order of the first ``rerank_top_n`` candidates (the rest keep
        theirs, below); on any failure the fused order, reported as a degradation."""
        from osreco.exporter.rerank import rerank

        reranker, n = self.reranker, self.config.rerank_top_n
        texts = [self.item_text(c.source) for c in ranked[:n]]
        try:
            order, scores = rerank(reranker, text, texts, top_n=n, batch_size=n)
        except Exception as e:  # noqa: BLE001 - a failing reranker must not fail the search
            deg.add("reranker", f"fused order kept: the reranker failed: {type(e).__name__}: {e}")
            return ranked, {}
        self.metrics.reranked.observe(len(texts))
        head = {ranked[i].item_id: round(float(scores[i]), 6) for i in range(len(texts))}
        return [ranked[i] for i in order] + ranked[len(order):], head

    def item_text(self, source: dict[str, Any]) -> str:
        """The item text the reranker reads: ``rerank_fields`` joined like ingest's embed text."""
        return join_fields(source, self.config.rerank_fields)

    def options(self, size: int) -> QueryOptions:
        """Query options for ``size`` candidates per signal."""
        return QueryOptions(index=self.config.alias, fields=self.fields, size=size,
                            ef_search=max(self.config.fusion.ef_search, size),
                            timeout=f"{int(self.config.search_timeout_s * 1000)}ms")

    def _msearch(self, intent: Intent, qvec: np.ndarray | None, user: UserContext | None, depth: int,
                 deg: Degradations) -> tuple[dict[str, SignalResult], dict[str, Any]]:
        """One ``_msearch``: the plan's signals plus, for a user, the titles of their history."""
        plan = build_msearch(intent, self.options(depth), qvec, user.vector if user else None)
        lines, signals = list(plan.lines), list(plan.signals)
        if user is not None and user.history:
            lines += [{"index": self.config.alias}, {"size": len(user.history), "_source": [self.fields.title],
                                                     "query": {"ids": {"values": list(user.history)}}}]
            signals.append("history")
        resp = self.node("search", self.client.msearch, body=lines)
        return self._read(signals, resp["responses"], deg)

    def _read(self, signals: list[str], responses: list[dict], deg: Degradations
              ) -> tuple[dict[str, SignalResult], dict[str, Any]]:
        """Per-signal results; errors, ``timed_out`` and shard failures reported, not hidden.

        Raises:
            NodeUnavailableError: every sub-search failed with an overload/unavailable status.
        """
        read = read_msearch(signals, responses)
        if self.reloader is not None:
            self.reloader.saw_indexes({str(h["_index"]) for r in read.values() for h in r.hits if "_index" in h})
        errors = [r for r in read.values() if r.error]
        if errors and len(errors) == len(read) and all(str(r.error)[:3] in ("429", "503", "504")
                                                       for r in errors):
            raise NodeUnavailableError(f"OpenSearch refused every sub-search: {errors[0].error}",
                                       retry_after_s=self.config.retry_after_s)
        failures = [{"signal": r.signal, "error": r.error} if r.error else
                    {"signal": r.signal, "failed_shards": r.failed_shards}
                    for r in read.values() if r.error or r.failed_shards]
        timed_out = any(r.timed_out for r in read.values())
        if failures:
            self.metrics.shard_failures.labels("shards").inc()
            deg.add("shard_failures", f"partial results: {failures}")
        if timed_out:
            self.metrics.shard_failures.labels("timed_out").inc()
            deg.add("timed_out", f"OpenSearch hit the {self.config.search_timeout_s}s budget: partial results")
        return read, {"timed_out": timed_out, "shard_failures": failures}

    def _hybrid(self, intent: Intent, qvec: np.ndarray | None, user: UserContext | None, depth: int,
                deg: Degradations) -> tuple[list[Candidate], dict[str, SignalResult], dict[str, Any]]:
        """The native neural-search ``hybrid`` query through its search pipeline (created once)."""
        f = self.config.fusion
        hs = build_hybrid_search(intent, self.options(depth), qvec, user.vector if user else None,
                                 weights={"bm25": f.bm25_weight, "dense": f.dense_weight, "cf": f.cf_weight})
        if hs.pipeline_id not in self._pipelines:
            self.node("pipeline", self.client.search_pipeline.put, id=hs.pipeline_id, body=hs.pipeline_body)
            self._pipelines.add(hs.pipeline_id)
        resp = self.node("search", self.client.search, index=self.config.alias, body=hs.body,
                         params={"search_pipeline": hs.pipeline_id, "explain": "true"})
        weights = hs.pipeline_body["phase_results_processors"][0]["normalization-processor"][
            "combination"]["parameters"]["weights"]
        history: dict[str, SignalResult] = {}
        if user is not None and user.history:
            history, _ = self._read(["history"], [self.node("history", self.client.search,
                index=self.config.alias, body={"size": len(user.history), "_source": [self.fields.title],
                                               "query": {"ids": {"values": list(user.history)}}})], deg)
        _, partial = self._read(["hybrid"], [resp], deg)
        return candidates_from_hybrid(resp, hs.signals, weights, f), history, partial

    def _settings(self, intent: Intent, user: UserContext | None) -> Any:
        """The configured fusion; a text-less listing for a known user is ordered by taste
        (additive boost, weight >= 1): its listing order carries no relevance to protect."""
        f = self.config.fusion
        if intent.text or user is None:
            return f
        return FusionOptions(method=f.method, bm25_weight=f.bm25_weight, dense_weight=f.dense_weight,
                             cf_weight=max(1.0, f.cf_weight), rrf_k=f.rrf_k, cf_mode="additive")

    def rank(self, lists: dict[str, SignalResult], user: UserContext | None, intent: Intent,
             settings: Any) -> tuple[list[Candidate], dict[str, float]]:
        """Fuse, boost by taste (affinity from the CF model when loaded), sort cue, optional MMR."""
        lists = {s: r for s, r in lists.items() if s != "history"}
        affinity = self.affinity(user, {str(h["_id"]) for r in lists.values() for h in r.hits})
        ranked = fuse(lists, settings, affinity or None)
        ranked = apply_sort(ranked, intent.sort, self.fields)
        if self.config.fusion.mmr_lambda is not None and self.cf_model is not None:
            ranked = mmr(ranked, self._factors([c.item_id for c in ranked]), self.config.fusion.mmr_lambda)
        return ranked, affinity

    def affinity(self, user: UserContext | None, item_ids: set[str]) -> dict[str, float]:
        """``user . item_factor`` for every candidate the CF model knows (empty without either)."""
        if user is None or user.vector is None or self.cf_model is None:
            return {}
        factors = self._factors(sorted(item_ids))
        return {i: float(np.dot(user.vector, v)) for i, v in factors.items()}

    def _factors(self, item_ids: list[str]) -> dict[str, np.ndarray]:
        if self.cf_model is None:
            return {}
        pos = self.cf_model.item_positions(item_ids)
        known = [i for i in item_ids if self.cf_model.item_positions([i])]
        return {i: self.cf_model.item_factors[p] for i, p in zip(known, pos)}

    def present(self, ranked: list[Candidate], intent: Intent | None, user: UserContext | None,
                history: SignalResult | None, affinity: dict[str, float], offset: int = 0) -> list[dict[str, Any]]:
        """Results with scores and explanations (filters satisfied, "because you liked")."""
        items = []
        liked = self._history_items(user, history)
        factors = self._factors([c.item_id for c in ranked]) if liked else {}
        blank = intent or Intent(query="", text="")
        for rank, c in enumerate(ranked, offset + 1):
            e = explain(c, blank, item_vector=factors.get(c.item_id), history=liked)
            items.append({"item_id": c.item_id, "rank": rank, "score": round(c.score, 6),
                          "bm25_score": c.bm25_score, "dense_score": c.dense_score,
                          "cf_score": affinity.get(c.item_id, c.cf_score),
                          "title": c.source.get(self.fields.title),
                          "filters_satisfied": list(e.satisfied), "filters_unsatisfied": list(e.unsatisfied),
                          "contributions": e.to_dict()["contributions"],
                          "because_you_liked": e.to_dict()["because_you_liked"], "source": dict(c.source)})
        return items

    def _history_items(self, user: UserContext | None, history: SignalResult | None) -> list[HistoryItem]:
        if user is None or not user.history or self.cf_model is None:
            return []
        titles = {str(h["_id"]): (h.get("_source") or {}).get(self.fields.title, "") for h in
                  (history.hits if history else [])}
        factors = self._factors(list(user.history))
        return [HistoryItem(i, titles.get(i, i), factors.get(i)) for i in user.history]

    def recommend(self, req: schemas.PageRequest) -> dict[str, Any]:
        """Taste (kNN on ``cf_vector``) plus popularity, the user's seen items excluded."""
        deg = Degradations(self.metrics)
        user = self.user(req.user_id, deg)
        vector = user.vector if user else None
        seen = list(user.history) if user else []
        plan = build_recommend(vector, seen, self.options(max(req.k, 50)))
        signals = list(plan.signals) + (["history"] if seen else [])
        lines = list(plan.lines) + ([{"index": self.config.alias}, {"size": len(seen), "_source": [
            self.fields.title], "query": {"ids": {"values": seen}}}] if seen else [])
        with self.metrics.stage("/v1/recommend", "search"):
            read, partial = self._read(signals, self.node("recommend", self.client.msearch, body=lines)[
                "responses"], deg)
        settings = FusionOptions(method="rrf", cf_weight=1.0, popularity_weight=0.3, cf_mode="additive")
        ranked, affinity = self.rank(read, user, Intent(query="", text=""), settings)
        results = self.present(ranked[:req.k], None, user, read.get("history"), affinity)
        return {"results": results, "personalized": vector is not None, "degradations": deg.items, **partial}

    def similar(self, item_id: str, req: schemas.PageRequest) -> dict[str, Any]:
        """The items nearest to ``item_id``'s embedding (the item itself excluded).

        Raises:
            NotFoundError: no such item, or it has no embedding.
        """
        deg = Degradations(self.metrics)
        doc = self.node("item", self.client.get, index=self.config.alias, id=item_id,
                        _source=[self.fields.embedding], ignore=[404])
        vector = (doc.get("_source") or {}).get(self.fields.embedding) if doc.get("found") else None
        if vector is None:
            raise NotFoundError(f"item {item_id!r} is not in {self.config.alias} (or has no embedding)",
                                item_id=item_id)
        body = build_similar(item_id, vector, self.options(req.k))
        read, partial = self._read(["dense"], [self.node("similar", self.client.search,
                                                         index=self.config.alias, body=body)], deg)
        ranked = fuse({"dense": read["dense"]}, FusionOptions(dense_weight=1.0))[:req.k]
        return {"item_id": item_id, "results": self.present(ranked, None, None, None, {}),
                "degradations": deg.items, **partial}

    # ---- events and forgetting ---------------------------------------------------------

    def record_events(self, events: tuple[schemas.Event, ...]) -> dict[str, Any]:
        """Store events (pseudonymized) and fold the users in online so the next request sees them."""
        deg = Degradations(self.metrics)
        key = self.config.effective_hmac_key
        docs = [ev_store.Event(user_key=pseudonymize(e.user_id, key), item_id=e.item_id, kind=e.kind,
                               timestamp=_timestamp(e.timestamp),
                               value=1.0 if e.value is None else e.value, query=e.query,
                               position=e.position, session_id=e.session_id) for e in events]
        with self.metrics.stage("/v1/events", "store"):
            self.node("events", ev_store.write_events, self.client, self.store.prefix, docs,
                      refresh="wait_for")
        updated = 0
        if self.cf_model is None:
            deg.add("cf_model", "events stored; no CF model loaded, so users are not updated online")
        else:
            for user_key in dict.fromkeys(d.user_key for d in docs):
                self.node("fold-in", cf_store.refresh_user_vector, self.client, self.store, self.cf_model,
                          user_key)
                updated += 1
        return {"accepted": len(docs), "users_updated": updated, "degradations": deg.items}

    def forget(self, user_id: str) -> dict[str, Any]:
        """Delete the user's events and stored vector, and drop the trained vector in memory.

        Only ``<prefix>-users`` and ``<prefix>-events`` are touched, never the item index.
        """
        key = pseudonymize(user_id, self.config.effective_hmac_key)
        res = self.node("forget", self.client.delete_by_query, index=self.store.events_index,
                        body={"query": {"term": {"user_key": key}}}, refresh=True, conflicts="proceed",
                        ignore_unavailable=True)
        gone = self.node("forget", self.client.delete, index=self.store.users_index, id=key, refresh=True,
                         ignore=[404])
        user_deleted = gone.get("result") == "deleted"
        if self.cf_model is not None and self.cf_model.user_vector(key) is not None:
            self.cf_model = self.cf_model.without_user(key)
            user_deleted = True
        return {"user_id": user_id, "events_deleted": int(res.get("deleted", 0)), "user_deleted": user_deleted}


def _load_encoder(path: Any, threads: int, warm: bool = False) -> Any:
    """A CPU ``Encoder`` over ``path``; ``warm`` runs one query so the first request does not pay."""
    from osreco.exporter.encoder import Encoder

    encoder = Encoder(path, threads=threads, device="cpu")
    if warm:
        encoder.encode_queries(["warm up"])
    return encoder


def _load_reranker(config: SidecarConfig) -> Any:
    """The cross-encoder bundle named by ``rerank_bundle`` (None when unset).

    Raises:
        ConfigError: the bundle does not load or is not a classification bundle.
    """
    if not config.rerank_bundle:
        return None
    try:
        reranker = _load_encoder(config.rerank_bundle, config.encoder_threads)
    except Exception as e:  # noqa: BLE001 - an explicitly configured reranker must load
        raise ConfigError(f"OSRECO_RERANK_BUNDLE: reranker bundle {config.rerank_bundle} failed to load: {e}",
                          field="OSRECO_RERANK_BUNDLE") from e
    if reranker.manifest.task != "classification":
        raise ConfigError(f"OSRECO_RERANK_BUNDLE: reranker bundle {config.rerank_bundle} is a {reranker.manifest.task} bundle, "
                          "not a cross-encoder", field="OSRECO_RERANK_BUNDLE",
                          fix="pass the --export folder of `osreco train reranker`")
    return reranker


def _timestamp(value: str | float | None) -> str:
    """ISO 8601 UTC for an event time (now when absent; epoch seconds or ISO accepted)."""
    if value is None:
        return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    if isinstance(value, float):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))  # validated by schemas
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).isoformat()

