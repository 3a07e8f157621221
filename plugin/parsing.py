"""A search request -> its :class:`Intent`: the rules parser (or the optional LLM parser)
over the facet vocabulary read from the index, plus the request's explicit filters.

Titles ("movies like Toy Story") are looked up in the node at parse time, one search on the
``title`` field per query that needs it (:func:`~osreco.plugin.intent.titles.title_request`),
so linking scales with the catalog instead of holding every title; answers are cached per
phrase (at most ``TITLE_CACHE_MAX`` phrases, for the vocabulary's TTL). The LLM parser does not
link titles."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace

from osreco.plugin import schemas
from osreco.plugin.errors import PluginError, RequestError
from osreco.plugin.intent.parser import IntentOptions, parse_intent
from osreco.plugin.intent.titles import TitleHit, title_request, titles_from_response
from osreco.plugin.intent.types import FacetMatch, Intent, IntentFields, RangeFilter
from osreco.plugin.intent.vocab import Embed, Vocabulary, vocabulary_from_response, vocabulary_request
from osreco.plugin.models import ServedModels
from osreco.plugin.transport import NodeTransport

log = logging.getLogger("osreco.plugin.service")
VOCAB_EMBED_MAX = 1000  # embed the facet vocabulary only when it is this small
TITLE_CACHE_MAX = 1024  # title lookups remembered (phrase -> candidates)

__all__ = ["QueryParser"]


class QueryParser:
    """Parses requests against the index's facet vocabulary (read by aggregation, cached).

    Args:
        transport: the node (the vocabulary aggregation).
        models: the served encoder (links query words to facet values by embedding).
        fields: index field names.
        vocab_ttl_s: how long the vocabulary is cached.
        embed_vocabulary: also embed the vocabulary (when it has at most ``VOCAB_EMBED_MAX`` values).
        llm_url, llm_timeout_s: the optional LLM parser (rules parser when unset or failing).
        llm_mode: ``combined`` (LLM only for what the rules leave unexplained) or ``llm``.
    """

    def __init__(self, transport: NodeTransport, models: ServedModels, fields: IntentFields, *,
                 vocab_ttl_s: float = 300.0, embed_vocabulary: bool = True, llm_url: str | None = None,
                 llm_timeout_s: float = 2.0, llm_mode: str = "combined"):
        self.transport, self.models, self.fields = transport, models, fields
        self.vocab_ttl_s, self.embed_vocabulary = vocab_ttl_s, embed_vocabulary
        self.llm_url, self.llm_timeout_s, self.llm_mode = llm_url, llm_timeout_s, llm_mode
        self._vocab: Vocabulary | None = None
        self._vocab_at = 0.0
        self._titles: OrderedDict[str, tuple[float, list[TitleHit]]] = OrderedDict()
        self._lock = threading.Lock()
        models.on_swap.append(self.invalidate)   # the vocabulary's vectors came from the old encoder

    def invalidate(self) -> None:
        """Forget the cached vocabulary (read again on the next request)."""
        with self._lock:
            self._vocab = None
            self._titles.clear()

    def vocabulary(self) -> Vocabulary:
        """The facet vocabulary, read by aggregation and cached for ``vocab_ttl_s``."""
        with self._lock:
            if self._vocab is not None and time.monotonic() - self._vocab_at < self.vocab_ttl_s:
                return self._vocab
            t = self.transport
            resp = t.call("vocabulary", t.client.search, index=t.alias, body=vocabulary_request(self.fields))
            vocab = vocabulary_from_response(resp, self.fields)
            if (self.embed_vocabulary and self.models.encoder is not None
                    and 0 < len(vocab.pairs()) <= VOCAB_EMBED_MAX):
                try:
                    vocab = vocab.with_vectors(self.models.embed_texts)
                except Exception as e:  # exact/fuzzy matching still works
                    log.warning("vocabulary embedding failed: %s", e)
            self._vocab, self._vocab_at = vocab, time.monotonic()
            return vocab

    def lookup_titles(self, phrase: str, exact: bool = False) -> list[TitleHit]:
        """Candidate items whose titles may match ``phrase``: one search on the title field
        (phrase matches first, fuzzy second; ``exact``: word-pair phrases instead of the fuzzy
        match, see :func:`~osreco.plugin.intent.titles.title_request`), cached per phrase for
        ``vocab_ttl_s``."""
        key = ("=" if exact else "~") + " ".join(phrase.split())
        with self._lock:
            cached = self._titles.get(key)
            if cached is not None and time.monotonic() - cached[0] < self.vocab_ttl_s:
                self._titles.move_to_end(key)
                return cached[1]
        t = self.transport
        try:
            body = title_request(key[1:], self.fields, exact=exact)
            resp = t.call("titles", t.client.search, index=t.alias, body=body)
        except PluginError as e:  # the lookup failing never fails the search: no link, words are searched
            log.warning("title lookup for %r failed: %s", key[1:], e)
            return []
        hits = titles_from_response(resp, self.fields)
        with self._lock:
            self._titles[key] = (time.monotonic(), hits)
            while len(self._titles) > TITLE_CACHE_MAX:
                self._titles.popitem(last=False)
        return hits

    def parse(self, req: schemas.SearchRequest) -> Intent:
        """The query's intent plus the request's explicit filters.

        Raises:
            RequestError: an explicit filter does not fit the index (see :meth:`request_filters`).
        """
        vocab = self.vocabulary()
        embed = self.models.embed_texts if vocab.vectors is not None else None
        intent = self._llm_intent(req, vocab, embed) or parse_intent(
            req.q, vocab, req.language, options=IntentOptions(fields=self.fields), embed=embed,
            titles=self.lookup_titles)
        facets, ranges = self.request_filters(req.filters)
        if facets or ranges:
            intent = replace(intent, filters=intent.filters + facets, ranges=intent.ranges + ranges)
        return intent

    def _llm_intent(self, req: schemas.SearchRequest, vocab: Vocabulary, embed: Embed | None) -> Intent | None:
        if not self.llm_url:
            return None
        from osreco.plugin.intent import llm  # optional backend, imported only when configured

        return llm.parse_with_llm(req.q, vocab, req.language, url=self.llm_url, timeout_s=self.llm_timeout_s,
                                  fields=self.fields, mode=self.llm_mode, embed=embed, titles=self.lookup_titles)

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
