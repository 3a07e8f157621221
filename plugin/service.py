"""SearchService: the sidecar's orchestration of one request, over typed collaborators.

search: intent (:class:`~osreco.plugin.parsing.QueryParser`, rules or LLM) -> encode
(:class:`~osreco.plugin.models.ServedModels`; BM25 only when the encoder fails) -> one
``_msearch`` (BM25 + kNN(meaning) + kNN(taste)) or one native ``hybrid`` query
(:class:`~osreco.plugin.transport.NodeTransport`) -> fuse -> CF boost
(:class:`~osreco.plugin.users.Users`) -> optional rerank -> explain
(:class:`~osreco.plugin.present.Presenter`). Every degradation is logged, counted and listed
in the response. Events, forgetting and readiness are the collaborators' own
(:class:`~osreco.plugin.readiness.Readiness` also wires the bundle hot-reload).

Choices: the CF boost uses ``user . item_factor`` from the loaded CF model for every
candidate (the ``cf`` kNN list's scores when no model is loaded); how strongly taste re-orders
a search depends on its query class (:mod:`osreco.plugin.taste`: filtered listing, free text,
title lookup), and in a filtered listing a known user's seen items are demoted; an explicit
sort cue is applied after both; MMR uses the CF item factors as item vectors.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
from opensearchpy import OpenSearch

from osreco.cf.querylog import write_queries
from osreco.plugin import schemas
from osreco.plugin.config import SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import NotFoundError, PluginError
from osreco.plugin.fusion import Candidate, FusionSettings, SignalResult, apply_sort, candidates_from_hybrid, fuse, mmr
from osreco.plugin.image_search import ImageSearch
from osreco.plugin.intent.types import Intent, IntentFields
from osreco.plugin.metrics import Metrics
from osreco.plugin.models import ServedModels
from osreco.plugin.parsing import QueryParser
from osreco.plugin.present import Presenter
from osreco.plugin.query import (
    MsearchPlan,
    QueryOptions,
    build_history,
    build_hybrid_search,
    build_msearch,
    build_recommend,
    filter_clauses,
)
from osreco.plugin.querylog_writer import QueryLogWriter, fusion_weights
from osreco.plugin.readiness import Readiness
from osreco.plugin.recommend import Recommender
from osreco.plugin.reload import BundleReloader, Periodic
from osreco.plugin.settings_store import CFModelWatch, RerankerWatch, SettingsStore
from osreco.plugin.similar import SimilarItems
from osreco.plugin.taste import personal_order, query_class, taste_settings
from osreco.plugin.transport import NodeTransport
from osreco.plugin.users import UserContext, Users
from osreco.plugin.voice import VoiceSearch

__all__ = ["RECOMMEND_FUSION", "SIMILAR_FUSION", "SearchService"]

log = logging.getLogger("osreco.plugin.service")

RECOMMEND_FUSION = FusionSettings(method="rrf", cf_weight=1.0, popularity_weight=0.3, cf_mode="additive")
SIMILAR_FUSION = FusionSettings(dense_weight=1.0)
NEIGHBOR_HISTORY = 20  # the user's most recent items whose neighbours a filtered listing asks for


class SearchService:
    """Search, recommend and similar over the collaborators (see the module docstring); the
    routes' other calls (events, forget, readiness) are delegated."""

    def __init__(self, config: SidecarConfig, metrics: Metrics, *, transport: NodeTransport, models: ServedModels,
                 users: Users, parser: QueryParser, presenter: Presenter, readiness: Readiness):
        self.config, self.metrics, self.fields = config, metrics, parser.fields
        self.transport, self.models, self.users = transport, models, users
        self.parser, self.presenter, self.readiness_checks = parser, presenter, readiness
        self.recommend_fusion: FusionSettings | None = None  # None: the served blend (plugin/recommend.py)
        self.recommender = Recommender(transport, users, self.fields, config.recommend, self.options)
        self.similar_items = SimilarItems(transport, self.fields, config.recommend.similar_cf_weight, self.options)
        self.images = ImageSearch.from_config(config)  # an image bundle without an image tower fails here
        self.voice = VoiceSearch.from_config(config)  # a speech model that does not load fails here too
        self.similar_items.image_weight = config.fusion.image_weight
        self._pipelines: set[str] = set()
        self.querylog = QueryLogWriter(lambda docs: write_queries(transport.client, config.prefix, docs), metrics,
                                       config.query_log_queue, explore=config.explore_fraction)
        # the fusion weights `osreco learn` promoted, per query class (absent: config.fusion exactly)
        self.settings_store = SettingsStore.over(transport.client, config.prefix, config.fusion)
        self.learned_reload: Periodic | None = None

    @classmethod
    def from_config(cls, config: SidecarConfig, metrics: Metrics) -> SearchService:
        """Connect to the node, load the bundle, the reranker and the CF model named by
        ``config``, and start the bundle hot-reload when it is on.

        Raises:
            ConfigError: the CF model or the configured reranker does not load (a bundle that
                does not load means BM25 only, reported by ``/readyz``).
        """
        transport = NodeTransport.from_config(config, metrics)
        service = cls.from_parts(config, transport, metrics, ServedModels.from_config(config, metrics))
        if config.bundle_dir and config.bundle_reload_s > 0:
            service.readiness_checks.watch_bundles(config).start()
        service.settings_store.refresh()
        checks: list[Any] = [service.settings_store.refresh]
        if config.cf_model_dir:
            from osreco.cf.model import CFModel

            checks.append(CFModelWatch(config.cf_model_dir, service.serve_cf_model, CFModel.load).check)
        if config.rerank_bundle:   # a promoted reranker: the configured link now points elsewhere
            from dataclasses import replace

            from osreco.plugin.models import load_reranker

            checks.append(RerankerWatch(config.rerank_bundle, lambda r: setattr(service.models, "reranker", r),
                                        lambda path: load_reranker(replace(config, rerank_bundle=path))).check)
        if config.bundle_reload_s > 0:   # learned weights, a promoted CF model and reranker, on one timer
            service.learned_reload = Periodic(checks, config.bundle_reload_s).start()
        return service

    @classmethod
    def from_parts(cls, config: SidecarConfig, transport: NodeTransport | OpenSearch, metrics: Metrics,
                   models: ServedModels, cf_model: Any = None, fields: IntentFields | None = None,
                   **extra: Any) -> SearchService:
        """Wire the collaborators over already loaded models (``extra`` goes to a subclass).

        Args:
            transport: the node, or a client to wrap with ``config``'s timeouts.
            models: the served encoder and reranker.
            cf_model: a loaded CF model (default: loaded from ``config.cf_model_dir``).
            fields: index field names (default: the defaults with ``config.facets``).
        """
        if not isinstance(transport, NodeTransport):
            transport = NodeTransport.from_config(config, metrics, client=transport)
        fields = fields or IntentFields(facets=config.facets)
        users = Users.from_config(config, transport, metrics, cf_model)
        parser = QueryParser(transport, models, fields, vocab_ttl_s=config.vocab_ttl_s,
                             embed_vocabulary=config.embed_vocabulary, llm_url=config.llm_url,
                             llm_timeout_s=config.llm_timeout_s, llm_mode=config.llm_mode)
        return cls(config, metrics, transport=transport, models=models, users=users, parser=parser,
                   presenter=Presenter(fields, users), readiness=Readiness(transport, models, users), **extra)

    # ---- what the routes and the tests reach ---------------------------------------------

    @property
    def encoder(self) -> Any:
        """The query encoder being served (None: BM25 only)."""
        return self.models.encoder

    @property
    def reloader(self) -> BundleReloader | None:
        """The bundle hot-reload, when wired."""
        return self.readiness_checks.reloader

    def item_text(self, source: dict[str, Any]) -> str:
        """The item text the reranker reads."""
        return self.models.item_text(source)

    def readiness(self) -> dict[str, Any]:
        """See :meth:`osreco.plugin.readiness.Readiness.check`."""
        return self.readiness_checks.check()

    def record_events(self, events: tuple[schemas.Event, ...]) -> dict[str, Any]:
        """See :meth:`osreco.plugin.users.Users.record_events`."""
        return self.users.record_events(events)

    def forget(self, user_id: str) -> dict[str, Any]:
        """See :meth:`osreco.plugin.users.Users.forget`."""
        return self.users.forget(user_id)

    def settings(self) -> dict[str, Any]:
        """GET /v1/settings: the fusion weights served per query class and their source."""
        return {"fusion": self.settings_store.served(),
                "cf_model": None if self.users.cf_model is None else {
                    "dir": self.config.cf_model_dir, "run_id": self.users.cf_model.meta.get("run_id"),
                    "dim": self.users.cf_model.dim}}

    def serve_cf_model(self, model: Any) -> None:
        """Serve ``model`` from now on (one assignment), forgotten users left out."""
        from osreco.cf.forget import forgotten_keys

        gone = forgotten_keys(self.transport.client, self.users.store.prefix)
        self.users.cf_model = model.without_user(*gone) if gone else model

    # ---- search, recommend, similar ------------------------------------------------------

    def parse(self, req: schemas.SearchRequest) -> Intent:
        """The query's intent plus the request's explicit filters."""
        return self.parser.parse(req)

    def search(self, req: schemas.SearchRequest) -> dict[str, Any]:
        """One search request end to end (see the module docstring); a spoken query is
        transcribed first (``plugin/voice.py``) and its transcript searched like typed text."""
        if req.audio is None:
            return self._search(req, {})
        timings: dict[str, float] = {}
        with self.metrics.stage("/v1/search", "asr", timings):
            spoken = self.voice.transcribe(req.audio, req.language, self._facet_values())
        return {**self._search(spoken.request(req), timings), **spoken.describe()}

    def _facet_values(self) -> dict[str, list[str]] | None:
        """The index's facet values that prime speech recognition (None when they cannot be read)."""
        if not self.voice.vocab_prompt:
            return None
        try:
            return {f: list(v) for f, v in self.parser.vocabulary().values.items()}
        except PluginError as e:  # recognition without the catalog's words is still recognition
            log.warning("facet values for the speech prompt could not be read: %s", e)
            return None

    def _search(self, req: schemas.SearchRequest, timings: dict[str, float]) -> dict[str, Any]:
        ep, deg = "/v1/search", Degradations(self.metrics)
        with self.metrics.stage(ep, "image", timings):  # a bad photo is the client's 4xx, before any node call
            photo = self.images.photo_vector(req.image)
        with self.metrics.stage(ep, "parse", timings):
            intent = self.parse(req)
        if intent.fallback_reason:
            deg.add("llm_parser", f"rules parser used: {intent.fallback_reason}")
        if intent.linked is not None and intent.linked.route == "similar":
            liked = self._search_like(req, intent, deg, timings)   # "movies like X": X's similar items
            if liked is not None:
                return liked
            if intent.linked.item_id is not None:  # linked (its words were cut) but not servable: words again
                intent = replace(intent, text=" ".join(filter(None, (intent.linked.phrase, intent.text))))
        with self.metrics.stage(ep, "embed", timings):
            qvec = self.models.embed_query(intent.text, deg, self.readiness_checks.pending, intent.language)
            image_vectors = self.images.vectors(photo, intent.text)
        known = self.users.context(req.user_id, deg)
        user = known if known is not None and known.vector is not None else None
        depth = max(self.config.fusion.candidates, req.page * req.k)
        # a language with its own encoder searches its own field (embedding_zh): msearch does that
        own = self.models.vector_field(intent.language) != "embedding"
        hybrid = self.config.retrieval == "hybrid" and qvec is not None and not image_vectors and not own
        with self.metrics.stage(ep, "search", timings):
            if hybrid:
                fused, lists, partial = self._hybrid(intent, qvec, user, depth, deg)
            else:
                plan = build_msearch(intent, self.models.search_options(self.options(depth), intent.language), qvec,
                                     user.vector if user else None, self._taste_exclude(intent, user),
                                     self._neighbors_of(intent, user))
                plan = self.images.extend(plan, intent, self.options(depth), image_vectors)
                lists, partial = self.transport.msearch("search", self._with_history(plan, user), deg)
        with self.metrics.stage(ep, "fuse", timings):
            if hybrid:
                affinity = self.users.affinity(user, {c.item_id for c in fused})
                ranked = apply_sort(fused, intent.sort, self.fields)
                cls = query_class(intent.text, [{"_source": c.source} for c in fused], self.fields)
            else:
                cls = self._query_class(intent, lists)
                fusion = self._search_fusion(intent, user, lists)
                ranked, affinity = self.rank(lists, user, intent, fusion)
        reranked: dict[str, float] = {}
        if self.models.reranker is not None and intent.text and ranked:
            # only when free text is left: a query that is all constraints is already satisfied
            # by the filters and ordered by taste, which a user-agnostic cross-encoder would undo
            # (see docs/evaluation.md). It reads the whole query, as in training.
            with self.metrics.stage(ep, "rerank", timings):
                ranked, reranked = self.models.rerank(req.q.strip(), ranked, deg)
        with self.metrics.stage(ep, "explain", timings):
            results = self.presenter.present(ranked[req.offset:req.offset + req.k], intent, user,
                                             lists.get("history"), affinity, req.offset)
        for r in results:
            r["rerank_score"] = reranked.get(r["item_id"])
        resp = {"results": results, "k": req.k, "page": req.page, "intent": intent.describe(),
                "parser": intent.parser, "retrieval": "hybrid" if hybrid else "msearch",
                "personalized": user is not None, "query_class": cls, "degradations": deg.items, **partial,
                "timings_ms": timings}
        return self.querylog.record(resp, "search", ranked, fusion_weights(self.config.fusion if hybrid else fusion),
                                    user_key=known.key if known else None, query=req.q, query_class=cls,
                                    language=req.language, k=req.k, page=req.page)

    def recommend(self, req: schemas.PageRequest) -> dict[str, Any]:
        """What ``osreco cf train`` learned, served (:class:`~osreco.plugin.recommend.Recommender`):
        ALS + the stored co-engagement neighbours + popularity, seen items excluded inside
        retrieval; with ``recommend_fusion`` set (the evaluation's variants), the kNN + popularity
        lists fused by it instead."""
        if self.recommend_fusion is not None:
            return self._recommend_fused(req, self.recommend_fusion)
        deg = Degradations(self.metrics)
        user = self.users.context(req.user_id, deg)
        with self.metrics.stage("/v1/recommend", "search"):
            rec = self.recommender.recommend(user, req.k, deg)
        results = self.presenter.present(rec.ranked[:req.k], None, user, rec.history, rec.affinity)
        titles = {str(h["_id"]): (h.get("_source") or {}).get(self.fields.title)
                  for h in (rec.history.hits if rec.history else [])}
        for r in results:  # an item the neighbours brought: the history item that brought it most
            via = rec.because.get(r["item_id"])
            if via and not r["because_you_liked"] and r["contributions"].get("neighbors"):
                r["because_you_liked"] = [{"item_id": via[0], "title": titles.get(via[0]) or via[0],
                                           "similarity": round(via[1], 4)}]
        resp = {"results": results, "personalized": rec.personalized, "degradations": deg.items, **rec.partial}
        weights = self.recommender.settings.weights(cold=user is None or user.vector is None)
        return self.querylog.record(resp, "recommend", rec.ranked, {"method": "blend", **weights},
                                    user_key=user.key if user else None, k=req.k)

    def _recommend_fused(self, req: schemas.PageRequest, fusion: FusionSettings) -> dict[str, Any]:
        """Taste (kNN on ``cf_vector``) plus the popularity listing, seen items excluded, fused by ``fusion``."""
        deg = Degradations(self.metrics)
        user = self.users.context(req.user_id, deg)
        vector = user.vector if user else None
        plan = build_recommend(vector, list(user.history) if user else [], self.options(max(req.k, 50)))
        with self.metrics.stage("/v1/recommend", "search"):
            read, partial = self.transport.msearch("recommend", self._with_history(plan, user), deg)
        ranked, affinity = self.rank(read, user, Intent(query="", text=""), fusion)
        results = self.presenter.present(ranked[:req.k], None, user, read.get("history"), affinity)
        resp = {"results": results, "personalized": vector is not None, "degradations": deg.items, **partial}
        return self.querylog.record(resp, "recommend", ranked, fusion_weights(fusion),
                                    user_key=user.key if user else None, k=req.k)

    def similar(self, item_id: str, req: schemas.PageRequest) -> dict[str, Any]:
        """Items like ``item_id``: its co-engagement neighbours blended with content kNN
        (:class:`~osreco.plugin.similar.SimilarItems`), the item itself excluded.

        Raises:
            NotFoundError: no such item, or it has neither an embedding nor neighbours.
        """
        deg = Degradations(self.metrics)
        ranked = self.similar_items.rank(item_id, req.k, None, deg, by=req.by)
        resp = {"item_id": item_id, "results": self.presenter.present(ranked, None, None, None, {}),
                "degradations": deg.items, **({"by": req.by} if req.by else {})}
        return self.querylog.record(resp, "similar", ranked, {"method": "blend", **self.similar_items.weights(req.by)},
                                    k=req.k, item_id=item_id)

    def _search_like(self, req: schemas.SearchRequest, intent: Intent, deg: Degradations,
                     timings: dict[str, float]) -> dict[str, Any] | None:
        """A "like X" search answered with X's similar items under the query's other constraints;
        ``None`` (searched as words) when the title did not link or X cannot be served."""
        linked = intent.linked
        if linked is None or linked.item_id is None:
            if linked is not None:
                deg.add("title_link", linked.note)
            return None
        depth = req.offset + req.k
        try:
            with self.metrics.stage("/v1/search", "search", timings):
                ranked = self.similar_items.rank(linked.item_id, depth, filter_clauses(intent, self.options(depth)),
                                                 deg)
        except NotFoundError as e:
            deg.add("title_link", f"{linked.title!r} has no similar items ({e.message}); searched as words")
            return None
        ranked = apply_sort(ranked, intent.sort, self.fields)  # an explicit sort cue wins here too
        with self.metrics.stage("/v1/search", "explain", timings):
            results = self.presenter.present(ranked[req.offset:depth], intent, None, None, {}, req.offset)
        for r in results:
            r["rerank_score"] = None
        resp = {"results": results, "k": req.k, "page": req.page, "intent": intent.describe(),
                "parser": intent.parser, "retrieval": "similar", "personalized": False, "query_class": "title",
                "degradations": deg.items, "timings_ms": timings}
        w = self.similar_items.cf_weight
        return self.querylog.record(resp, "search", ranked, {"method": "blend", "neighbors": w, "dense": 1.0 - w},
                                    query=req.q, query_class="title", language=req.language, k=req.k, page=req.page)

    # ---- building blocks -----------------------------------------------------------------

    def options(self, size: int) -> QueryOptions:
        """Query options for ``size`` candidates per signal."""
        return QueryOptions(index=self.config.alias, fields=self.fields, size=size,
                            ef_search=max(self.config.fusion.ef_search, size),
                            timeout=f"{int(self.config.search_timeout_s * 1000)}ms")

    def _with_history(self, plan: MsearchPlan, user: UserContext | None) -> MsearchPlan:
        """``plan`` plus the lookup of the user's history (signal ``history``), when there is one."""
        if user is None or not user.history:
            return plan
        return plan.adding("history", self.config.alias, build_history(user.history, self.fields))

    def _hybrid(self, intent: Intent, qvec: np.ndarray | None, user: UserContext | None, depth: int,
                deg: Degradations) -> tuple[list[Candidate], dict[str, SignalResult], dict[str, Any]]:
        """The native neural-search ``hybrid`` query through its search pipeline (created once)."""
        f, t = self.config.fusion, self.transport
        hs = build_hybrid_search(intent, self.options(depth), qvec, user.vector if user else None,
                                 weights={"bm25": f.bm25_weight, "dense": f.dense_weight, "cf": f.cf_weight})
        if hs.pipeline_id not in self._pipelines:
            t.call("pipeline", t.client.search_pipeline.put, id=hs.pipeline_id, body=hs.pipeline_body)
            self._pipelines.add(hs.pipeline_id)
        resp = t.call("search", t.client.search, index=t.alias, body=hs.body,
                      params={"search_pipeline": hs.pipeline_id, "explain": "true"})
        weights = hs.pipeline_body["phase_results_processors"][0]["normalization-processor"][
            "combination"]["parameters"]["weights"]
        history: dict[str, SignalResult] = {}
        if user is not None and user.history:
            history, _ = t.search("history", "history", build_history(user.history, self.fields), deg)
        _, partial = t.read(["hybrid"], [resp], deg)
        return candidates_from_hybrid(resp, hs.signals, weights, f), history, partial

    def _query_class(self, intent: Intent, lists: dict[str, SignalResult]) -> str:
        """``listing``, ``title`` or ``text`` (see :func:`osreco.plugin.taste.query_class`)."""
        bm25 = lists.get("bm25")
        return query_class(intent.text, bm25.hits if bm25 is not None else [], self.fields)

    def _taste_exclude(self, intent: Intent, user: UserContext | None) -> tuple[str, ...]:
        """The seen items the taste kNN leaves out: in a filtered listing that demotes them."""
        if user is None or intent.text or not self.config.fusion.demote_seen:
            return ()
        return user.history

    def _neighbors_of(self, intent: Intent, user: UserContext | None) -> tuple[str, ...]:
        """The recent items whose stored neighbours join a known user's filtered listing."""
        if user is None or intent.text or self.config.fusion.neighbors_weight <= 0:
            return ()
        return user.history[-NEIGHBOR_HISTORY:]

    def _search_fusion(self, intent: Intent, user: UserContext | None,
                       lists: dict[str, SignalResult] | None = None) -> FusionSettings:
        """The configured fusion with the taste weight (and demotion) of the query's class;
        the configured fusion, demoting nothing, for an anonymous search."""
        cls = self._query_class(intent, lists or {})
        f = self.settings_store.fusion(self.config.fusion, cls)
        if user is None:
            return replace(f, demote_seen=False)
        return taste_settings(f, cls)

    def rank(self, lists: dict[str, SignalResult], user: UserContext | None, intent: Intent,
             settings: FusionSettings) -> tuple[list[Candidate], dict[str, float]]:
        """Fuse, boost by taste (affinity from the CF model when loaded), demote the user's seen
        items when ``settings.demote_seen``, apply the sort cue (it wins), optional MMR."""
        lists = {s: r for s, r in lists.items() if s != "history"}
        affinity = self.users.affinity(user, {str(h["_id"]) for r in lists.values() for h in r.hits})
        ranked = fuse(lists, settings, affinity or None)
        seen = user.all_seen if user is not None and settings.demote_seen else ()
        ranked = personal_order(ranked, seen, intent.sort, self.fields)
        if self.config.fusion.mmr_lambda is not None and self.users.cf_model is not None:
            ranked = mmr(ranked, self.users.factors([c.item_id for c in ranked]), self.config.fusion.mmr_lambda)
        return ranked, affinity

