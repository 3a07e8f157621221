"""The typed intent of a search-box query, and the index field names it is grounded in.

An :class:`Intent` is what the parsers (rules in :mod:`osreco.plugin.intent.parser`, the optional
LLM in :mod:`osreco.plugin.intent.llm`) produce and what :mod:`osreco.plugin.query` turns
into query DSL. It never holds DSL itself: only field names from :class:`IntentFields`, facet
values from the index vocabulary, numbers and the remaining free text.

Its dict form (:meth:`Intent.to_dict`) is the JSON the LLM is asked for and the form the
golden tests compare::

    {"text": "running", "filters": {"color": ["red"]}, "ranges": {"price": {"lt": 50.0}},
     "exclude": {"brand": ["nike"]}, "sort": {"field": "price", "order": "asc"}}

plus ``"linked": {...}`` (:class:`LinkedTitle`) when the query names a catalog title.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from osreco.plugin.errors import ConfigError

RANGE_OPS = ("gte", "gt", "lte", "lt")
SORT_KEYS = ("price", "year", "popularity", "rating")
SORT_ORDERS = ("asc", "desc")
MATCH_KINDS = ("exact", "synonym", "fuzzy", "embedding", "llm", "request")


@dataclass(frozen=True)
class IntentFields:
    """Names of the index fields the sidecar core reads and writes queries for (the catalog's
    columns are mapped onto these by ingest's ``osreco.ingest.catalog.FieldMap``).

    Defaults follow docs/contracts.md. ``rating`` is optional: "best rated" sorts by it when
    set, else by ``rating_avg`` (the shrunk average rating ``osreco cf train`` writes where the
    data has ratings), ties by ``popularity``.

    Raises:
        ConfigError: when a name is empty or the facet list is empty.
    """

    item_id: str = "item_id"
    title: str = "title"
    text: str = "text"
    cjk_suffix: str = ".cjk"
    facets: tuple[str, ...] = ("brand", "color", "category", "genres")
    price: str = "price"
    year: str = "year"
    popularity: str = "popularity"
    rating: str | None = None
    rating_avg: str = "rating_avg"
    release_date: str = "release_date"
    embedding: str = "embedding"
    cf_vector: str = "cf_vector"

    def __post_init__(self) -> None:
        names = (self.item_id, self.title, self.text, self.price, self.year, self.popularity,
                 self.embedding, self.cf_vector)
        if not all(isinstance(n, str) and n for n in names) or not self.facets:
            raise ConfigError("every field name must be a non-empty string and facets non-empty",
                              field="IntentFields", fix="pass the index's real field names")

    @property
    def numeric(self) -> tuple[str, ...]:
        """The numeric fields an intent may put a range on (logical names = field names)."""
        return (self.price, self.year)

    def sort_field(self, key: str) -> str:
        """Map a logical sort key (``price``, ``year``, ``popularity``, ``rating``) to a field."""
        return {"price": self.price, "year": self.year, "popularity": self.popularity,
                "rating": self.rating or self.rating_avg}[key]

    def source_fields(self) -> list[str]:
        """Fields worth returning in ``_source``: what explanations and the API show."""
        out = [self.item_id, self.title, *self.facets, self.price, self.year, self.popularity, self.release_date,
               self.rating_avg]
        if self.rating:
            out.append(self.rating)
        return out


@dataclass(frozen=True)
class FacetMatch:
    """A facet value found in the query.

    Args:
        field: facet field, e.g. ``brand``.
        value: the value exactly as it is in the index vocabulary.
        how: ``exact``, ``synonym``, ``fuzzy``, ``embedding``, ``llm`` or ``request``.
        phrase: the words of the query that produced it.
        score: similarity for fuzzy/embedding matches, 1.0 otherwise.
    """

    field: str
    value: str
    how: str = "exact"
    phrase: str = ""
    score: float = 1.0


@dataclass(frozen=True)
class RangeFilter:
    """A numeric range on one field; ``None`` bounds are open."""

    field: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def bounds(self) -> dict[str, float]:
        """The set bounds as ``{op: value}``, in a fixed op order."""
        return {op: getattr(self, op) for op in RANGE_OPS if getattr(self, op) is not None}

    def contains(self, x: float) -> bool:
        """Whether ``x`` satisfies every bound."""
        b = self.bounds()
        return (("gte" not in b or x >= b["gte"]) and ("gt" not in b or x > b["gt"])
                and ("lte" not in b or x <= b["lte"]) and ("lt" not in b or x < b["lt"]))


@dataclass(frozen=True)
class SortKey:
    """A sort cue: logical key (see ``SORT_KEYS``) and order."""

    key: str
    order: str


@dataclass(frozen=True)
class LinkedTitle:
    """A catalog title the query names ("movies like Toy Story", "类似玩具总动员的电影", a quoted or
    whole-query title), linked by :mod:`osreco.plugin.intent.titles`.

    Args:
        phrase: the query words that named it.
        item_id: the linked item, or ``None`` when no title matched (the words stay text).
        title: the linked item's title.
        how: ``exact`` (same title up to case, punctuation, article and year), ``fuzzy``
            (within a few typos) or ``none``.
        alternatives: how many other items matched as well (the most popular was picked).
        route: ``similar`` ("like X": answer with X's similar items) or ``title`` (the query is
            the title itself: searched as words, its words never become filters).
        note: a one-line account of the choice (ambiguity, no match).
    """

    phrase: str
    item_id: str | None
    title: str | None = None
    how: str = "exact"
    alternatives: int = 0
    route: str = "similar"
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """The JSON form shown as ``intent.linked``."""
        return {"phrase": self.phrase, "item_id": self.item_id, "title": self.title, "how": self.how,
                "alternatives": self.alternatives, "route": self.route, "note": self.note}


@dataclass(frozen=True)
class Intent:
    """What a query asks for, grounded in the index schema.

    Args:
        query: the original query text.
        text: the remaining free text, for BM25 and the meaning vector ("" when nothing is left).
        filters: facet values the results must have (same field: any of; across fields: all).
        ranges: numeric ranges the results must fall in.
        exclusions: facet values the results must not have.
        sort: a sort cue, or ``None`` for relevance.
        language: ``en`` or ``zh``.
        parser: which parser produced it: ``rules`` or ``llm``.
        linked: the catalog title the query names, when it names one (or tried to).
        fallback_reason: why the LLM parser was not used, when it was asked and failed.
    """

    query: str
    text: str
    filters: tuple[FacetMatch, ...] = ()
    ranges: tuple[RangeFilter, ...] = ()
    exclusions: tuple[FacetMatch, ...] = ()
    sort: SortKey | None = None
    language: str = "en"
    parser: str = "rules"
    linked: LinkedTitle | None = None
    fallback_reason: str | None = field(default=None, compare=False)

    def terms(self) -> dict[str, list[str]]:
        """Required facet values grouped by field (field and value order as found)."""
        return _group(self.filters)

    def excluded_terms(self) -> dict[str, list[str]]:
        """Excluded facet values grouped by field."""
        return _group(self.exclusions)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (no ``query``/``language``/``parser``): see the module docstring;
        ``linked`` only when the query names a catalog title (or tried to)."""
        out: dict[str, object] = {
            "text": self.text,
            "filters": self.terms(),
            "ranges": {r.field: r.bounds() for r in self.ranges},
            "exclude": self.excluded_terms(),
            "sort": None if self.sort is None else {"field": self.sort.key, "order": self.sort.order},
        }
        if self.linked is not None:
            out["linked"] = self.linked.to_dict()
        return out

    def describe(self) -> dict[str, object]:
        """``to_dict`` plus language and parser: what an API response shows."""
        out = self.to_dict()
        out.update(language=self.language, parser=self.parser)
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        return out


def _group(matches: tuple[FacetMatch, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in matches:
        values = out.setdefault(m.field, [])
        if m.value not in values:
            values.append(m.value)
    return out
