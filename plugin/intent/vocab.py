"""The facet vocabulary of the index: which brands, colors, categories and genres exist.

The caller reads it from the index with one aggregation (:func:`vocabulary_request`), builds a
:class:`Vocabulary` from the response (:func:`vocabulary_from_response`) and caches it; the
intent parser links query words to it exactly, fuzzily (edit distance) and, when an
``embed`` callable is given, by embedding similarity. Everything here is pure.

Example:
    >>> v = Vocabulary.from_values({"brand": ["nike", "adidas"], "genres": ["sci-fi"]})
    >>> v.lookup("Sci Fi"), v.fuzzy("nikey").value
    ([('genres', 'sci-fi')], 'nike')
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.types import FacetMatch, IntentFields

Embed = Callable[[Sequence[str]], np.ndarray]
"""Maps texts to an (n, dim) array of unit vectors (e.g. ``Encoder.encode_queries``)."""

_WORD = re.compile(r"[0-9a-z]+|[\u3400-\u9fff]+")
_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")


def _stem(word: str) -> str:
    """Fold English plurals so "comedies" == "comedy", "watches" == "watch", "shoes" == "shoe"."""
    if len(word) <= 3 or not word.isascii():
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalize_key(text: str, stem: bool = True) -> str:
    """The matching key of a phrase: NFKC, lowercase, no punctuation/spaces, plurals folded.

    Args:
        text: a facet value or query phrase.
        stem: fold plurals (off for edit-distance matching, where "adidas" must stay whole).

    Returns:
        e.g. ``"Sci-Fi"`` -> ``"scifi"``, ``"children's"`` -> ``"children"``.
    """
    folded = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    return "".join(_stem(w) if stem else w for w in _WORD.findall(folded))


def edit_distance(a: str, b: str, limit: int) -> int:
    """Edit distance with adjacent transpositions ("samsnug" -> "samsung" is 1), capped.

    Returns:
        the distance, or ``limit + 1`` as soon as it must exceed ``limit``.
    """
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            cur.append(d)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1] if prev[-1] <= limit else limit + 1


def _thirds(key: str) -> tuple[str, ...]:
    """``key`` cut into three nearly equal, non-empty chunks (fewer for very short keys)."""
    n = len(key)
    a, b = n // 3, 2 * n // 3
    return tuple(c for c in (key[:a], key[a:b], key[b:]) if c)


def max_typos(key: str) -> int:
    """Edits allowed for a key of this length: 0 below 5 chars, 1 up to 7, 2 from 8."""
    return 0 if len(key) < 5 else 1 if len(key) < 8 else 2


@dataclass(frozen=True)
class Vocabulary:
    """Facet values per field, indexed for exact, fuzzy and embedding lookup.

    Args:
        values: field -> values as stored in the index (lowercased keywords).
        vectors: optional unit vectors of every ``(field, value)`` in :meth:`pairs` order.
    """

    values: Mapping[str, tuple[str, ...]]
    vectors: np.ndarray | None = field(default=None, compare=False, repr=False)
    _index: dict[str, list[tuple[str, str]]] = field(default_factory=dict, compare=False, repr=False)
    _raw: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)
    _chunks: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)
    _cjk: list[str] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        for f, vals in self.values.items():
            for v in vals:
                key = normalize_key(v)
                if key:
                    self._index.setdefault(key, []).append((f, v))
                    raw = normalize_key(v, stem=False)
                    if raw not in self._raw:
                        self._raw[raw] = (f, v)
                        for chunk in _thirds(raw):
                            self._chunks.setdefault(chunk, []).append(raw)
        self._cjk.extend(sorted({v for _, v in self.pairs() if _CJK_CHAR.search(v)}, key=len, reverse=True))
        if self.vectors is not None and len(self.vectors) != len(self.pairs()):
            raise ConfigError("vocabulary vectors do not match its values", field="vectors",
                              fix="build them with Vocabulary.with_vectors(embed)")

    @classmethod
    def from_values(cls, values: Mapping[str, Sequence[str]]) -> Vocabulary:
        """Build from ``{field: [values]}``; values are lowercased, deduplicated and sorted."""
        return cls({f: tuple(sorted({str(v).strip().lower() for v in vals if str(v).strip()}))
                    for f, vals in values.items()})

    def pairs(self) -> list[tuple[str, str]]:
        """Every ``(field, value)`` in a fixed order (fields as given, values sorted)."""
        return [(f, v) for f, vals in self.values.items() for v in vals]

    def has(self, field_name: str, value: str) -> bool:
        """Whether ``value`` is exactly a value of ``field_name``."""
        return value in self.values.get(field_name, ())

    def lookup(self, phrase: str) -> list[tuple[str, str]]:
        """Exact (normalized) matches of ``phrase``: ``[(field, value), ...]`` in field order."""
        return list(self._index.get(normalize_key(phrase), []))

    def resolve(self, candidates: Sequence[str], field_name: str | None = None) -> tuple[str, str] | None:
        """The first candidate value that exists (optionally only in ``field_name``)."""
        for cand in candidates:
            for f, v in self.lookup(cand):
                if field_name is None or f == field_name:
                    return f, v
        return None

    def fuzzy(self, phrase: str) -> FacetMatch | None:
        """The closest value within :func:`max_typos` edits ("nikey" -> nike), else ``None``.

        Ties go to the smaller distance, then field order, then alphabetical order, so the
        result is deterministic. Keys of 4 characters or fewer never match fuzzily.
        """
        key = normalize_key(phrase, stem=False)
        limit = max_typos(key)
        if limit == 0 or not key.isascii() or key.isdigit():
            return None
        best: tuple[int, int, str, str] | None = None
        order = {k: i for i, k in enumerate(self._candidates(key))}
        for vkey, i in order.items():
            if vkey[0] != key[0] or len(vkey) < 4:
                continue
            d = edit_distance(key, vkey, limit)
            if d <= limit and (best is None or (d, i) < best[:2]):
                best = (d, i, *self._raw[vkey])
        if best is None:
            return None
        return FacetMatch(best[2], best[3], "fuzzy", phrase, round(1.0 - best[0] / max(len(key), 1), 4))

    def _candidates(self, key: str) -> list[str]:
        """Keys that may be within 2 edits of ``key``, in vocabulary order.

        Pigeonhole: two edits leave at least one of a key's three chunks intact, so only keys
        with a chunk that occurs in ``key`` are compared (keeps fuzzy lookup fast on big
        vocabularies).
        """
        found: set[str] = set()
        for i in range(len(key)):
            for j in range(i + 1, len(key) + 1):
                found.update(self._chunks.get(key[i:j], ()))
        return [k for k in self._raw if k in found]

    def cjk_values(self) -> list[str]:
        """Values written in CJK characters, longest first (scanned for inside Chinese text)."""
        return list(self._cjk)

    def with_vectors(self, embed: Embed) -> Vocabulary:
        """A copy with every value embedded once (cache it with the vocabulary)."""
        texts = [v for _, v in self.pairs()]
        vecs = np.asarray(embed(texts), dtype=np.float32) if texts else np.zeros((0, 1), np.float32)
        return Vocabulary(self.values, vecs)

    def nearest(self, phrases: Sequence[str], embed: Embed, threshold: float) -> list[FacetMatch | None]:
        """For each phrase, the most similar value by embedding if cosine >= ``threshold``.

        Args:
            phrases: query phrases that matched nothing exactly or fuzzily.
            embed: text -> unit vectors; called once for all phrases.
            threshold: minimum cosine similarity.

        Returns:
            one ``FacetMatch`` (how="embedding") or ``None`` per phrase.
        """
        if not phrases or self.vectors is None or not len(self.vectors):
            return [None] * len(phrases)
        q = np.asarray(embed(list(phrases)), dtype=np.float32)
        sims = q @ self.vectors.T
        pairs = self.pairs()
        out: list[FacetMatch | None] = []
        for phrase, row in zip(phrases, sims):
            j = int(np.argmax(row))
            ok = float(row[j]) >= threshold
            out.append(FacetMatch(pairs[j][0], pairs[j][1], "embedding", phrase,
                                  round(float(row[j]), 4)) if ok else None)
        return out


def vocabulary_request(fields: IntentFields = IntentFields(), size: int = 500) -> dict[str, Any]:
    """The search body that reads every facet's values with one terms aggregation per facet.

    Args:
        fields: field names.
        size: most values per facet.

    Returns:
        a body for ``client.search(index=alias, body=...)``.
    """
    if size < 1:
        raise ConfigError("vocabulary size must be >= 1", field="size")
    return {"size": 0, "track_total_hits": False,
            "aggs": {f: {"terms": {"field": f, "size": size}} for f in fields.facets}}


def vocabulary_from_response(response: Mapping[str, Any], fields: IntentFields = IntentFields()) -> Vocabulary:
    """Build the vocabulary from the response to :func:`vocabulary_request`.

    Missing aggregations (a facet the index does not have) give an empty value list.
    """
    aggs = response.get("aggregations") or {}
    return Vocabulary.from_values({
        f: [str(b["key"]) for b in (aggs.get(f) or {}).get("buckets", [])] for f in fields.facets})
