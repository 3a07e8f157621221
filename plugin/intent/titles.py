"""Catalog titles a query names: "movies like Toy Story", "类似玩具总动员的电影", a whole-query title.

Pure. The parser finds the phrasing (:func:`find_like`), asks a :data:`TitleLookup` once for
candidate items, and :func:`link_title` decides. The sidecar's lookup is one search on the
index's ``title`` field (:func:`title_request`: a phrase match boosted over a fuzzy match, the
top ``size`` candidates; for a lookup without a "like" cue, where only an exact title counts,
phrase matches of the query's word pairs instead of the fuzzy match, several times cheaper on
the node), so it scales with the catalog without holding every title in memory;
:class:`TitleIndex` is an in-memory lookup over a few rows (tests, the golden set).

Matching compares title keys: the normalized title without a trailing year ("(1995)"), a
trailing alternate title in parentheses and a leading or trailing ("Godfather, The") article.
``exact`` = equal keys; ``fuzzy`` = keys within :func:`~osreco.plugin.intent.vocab.max_typos`
edits. Longer phrases win, exact before fuzzy; several items at the best match: the one whose
year the query names, else the most popular, the others counted as alternatives.

Example:
    >>> idx = TitleIndex([TitleHit("1", "Toy Story (1995)", 452.0)])
    >>> cue = find_like("movies like toy story from the 80s")
    >>> link = link_title(cue, idx(cue.phrase))
    >>> link.linked.item_id, link.linked.how, cue.phrase[:link.end - cue.start]
    ('1', 'exact', 'toy story')
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from osreco.plugin.intent.types import IntentFields, LinkedTitle
from osreco.plugin.intent.vocab import edit_distance, max_typos, normalize_key

__all__ = ["Cue", "Link", "TitleHit", "TitleIndex", "TitleLookup", "find_like", "link_title", "title_key",
           "title_request", "titles_from_response"]


@dataclass(frozen=True)
class TitleHit:
    """One candidate item from a title lookup."""

    item_id: str
    title: str
    popularity: float = 0.0


TitleLookup = Callable[[str, bool], Sequence[TitleHit]]
"""``(phrase, exact)`` -> candidate items whose titles may match it (the decision is
:func:`link_title`'s); ``exact``: only a title equal to a span of two words or more of the
phrase can link, so the lookup need not find near misses."""

_YEAR = re.compile(r"\s*\(?((?:19|20)\d\d)\)?\s*$")
_ALT = re.compile(r"\s*\([^()]*\)\s*$")
_TAIL_ARTICLE = re.compile(r",\s*(?:the|a|an|la|le|les|il|el|der|die|das)\s*$")
_HEAD_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


def _clean(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower().strip()
    t = _YEAR.sub("", t)
    t = _ALT.sub("", t)
    t = _TAIL_ARTICLE.sub("", t).strip()
    return _HEAD_ARTICLE.sub("", t)


def title_key(text: str, stem: bool = True) -> str:
    """The matching key of a title or query phrase ("Godfather, The (1972)" == "the godfather")."""
    return normalize_key(_clean(text), stem)


def title_year(text: str) -> int | None:
    """The trailing year of a title or phrase, when it has one."""
    m = _YEAR.search(unicodedata.normalize("NFKC", text))
    return int(m.group(1)) if m else None


# ---- the phrasing ------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    """Where a query names a title.

    Args:
        start, end: the phrase that may hold the title (offsets in the normalized query).
        cut_start, cut_end: what to cut when the whole phrase is the title (cue words included).
        anchor: ``start`` (the title begins the phrase, may end early), ``end`` (ends it, may
            begin late), ``whole``, or ``any`` (the whole phrase, or any span of 2 to
            :data:`MAX_MENTION_WORDS` words inside it: a title mentioned in a longer query).
        route: ``similar`` or ``title`` (see :class:`LinkedTitle`).
    """

    query: str
    start: int
    end: int
    cut_start: int
    cut_end: int
    anchor: str = "start"
    route: str = "similar"

    @property
    def phrase(self) -> str:
        """The words that may hold the title."""
        return self.query[self.start:self.end]


_EN_CUE = re.compile(r"(?<![a-z0-9'])(?:similar to|in the style of|something like|anything like|like)\s+")
_NOT_A_CUE = frozenset({"i", "we", "you", "they", "would", "'d", "d", "might", "don't", "dont", "do", "really"})
_EN_STOP = re.compile(r"\s*(?:[,;!?。，；]|\s(?:but|except|excluding|without|not|no|nothing)\s)")
_ZH_END = "这样|那样|一样|差不多|相似|类似"
_ZH_AROUND = re.compile(r"(?:和|跟|与)\s*(?P<x>[^，,。！？!?]+?)\s*(?:" + _ZH_END + r")的?")
_ZH_BEFORE = re.compile(r"(?:类似于|类似|相似于|(?<![好图影肖画录想偶])像是|(?<![好图影肖画录想偶])像)\s*"
                        r"(?P<x>[^，,。！？!?的]+?)\s*(?=" + _ZH_END + r"|的|[，,。！？!?]|$)"
                        r"(?:(?:" + _ZH_END + r")的?)?")
_ZH_AFTER = re.compile(r"(?P<x>[^，,。！？!?\s](?:[^，,。！？!?]*?[^，,。！？!?\s])?)\s*(?:这样|那样|一样)的")


def find_like(s: str) -> Cue | None:
    """The first "like X" phrasing in the normalized query ``s``, English or Chinese."""
    for m in _EN_CUE.finditer(s):
        before = s[:m.start()].split()
        if before and before[-1] in _NOT_A_CUE:
            continue
        stop = _EN_STOP.search(s, m.end())
        end = stop.start() if stop else len(s.rstrip())
        if end > m.end():
            return Cue(s, m.end(), end, m.start(), end)
    for pattern, anchor in ((_ZH_AROUND, "start"), (_ZH_BEFORE, "start"), (_ZH_AFTER, "end")):
        zm = pattern.search(s)
        if zm and zm.group("x").strip():
            return Cue(s, zm.start("x"), zm.end("x"), zm.start(), zm.end(), anchor)
    return None


# ---- the decision ------------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """The outcome: the link (``item_id`` None when nothing matched) and the query span it used
    (``start``/``end`` in the normalized query; cut that, not the whole cue, when it is shorter)."""

    linked: LinkedTitle
    start: int
    end: int


_UNIT = re.compile(r"[a-z0-9][a-z0-9'&:.-]*|[\u3400-\u9fff]|\(\d{4}\)")


MAX_MENTION_WORDS = 8


def _phrases(cue: Cue) -> list[tuple[int, int]]:
    """Sub-phrases to try, longest first: prefixes (anchor start), suffixes (end), the whole, or
    (anchor any) the whole and then every span of 2 to :data:`MAX_MENTION_WORDS` words."""
    units = [(m.start() + cue.start, m.end() + cue.start) for m in _UNIT.finditer(cue.phrase)]
    if not units:
        return []
    if cue.anchor == "whole":
        return [(units[0][0], units[-1][1])]
    if cue.anchor == "any":
        n = len(units)
        inner = [(units[i][0], units[i + size - 1][1]) for size in range(min(n - 1, MAX_MENTION_WORDS), 1, -1)
                 for i in range(n - size + 1)]
        return [(units[0][0], units[-1][1]), *inner]
    if cue.anchor == "end":
        return [(units[i][0], units[-1][1]) for i in range(len(units))]
    return [(units[0][0], units[n - 1][1]) for n in range(len(units), 0, -1)]


def _pick(phrase: str, group: list[TitleHit]) -> tuple[TitleHit, int]:
    """The hit whose year the phrase names, else the most popular (then the smallest id)."""
    year = title_year(phrase)
    best = min(group, key=lambda h: (title_year(h.title) != year if year else False, -h.popularity, h.item_id))
    return best, len({h.item_id for h in group}) - 1


def link_title(cue: Cue, hits: Iterable[TitleHit], fuzzy: bool = True) -> Link:
    """Link the cue's phrase to one of ``hits`` (see the module docstring for the rules).

    Returns:
        the link; ``how="none"`` with the whole phrase when no hit matches.
    """
    cands = list({h.item_id: h for h in hits}.values())
    keys = [(title_key(h.title), title_key(h.title, stem=False)) for h in cands]
    spans = [(a, b) for a, b in _phrases(cue) if len(title_key(cue.query[a:b], stem=False)) >= 2]
    for how in ("exact", "fuzzy"):
        if how == "fuzzy" and (not fuzzy or cue.anchor in ("whole", "any")):
            break
        for a, b in spans:
            phrase = cue.query[a:b]
            pkey, raw = title_key(phrase), title_key(phrase, stem=False)
            if how == "exact":
                group = [h for h, (k, _) in zip(cands, keys) if k == pkey]
            else:
                limit = max_typos(raw)
                dist = {h.item_id: edit_distance(raw, r, limit) for h, (_, r) in zip(cands, keys)} if limit else {}
                near = [d for d in dist.values() if d <= limit]
                group = [h for h in cands if near and dist.get(h.item_id) == min(near)]
            if group:
                hit, others = _pick(phrase, group)
                year = title_year(phrase)
                chose = f"the one from {year}" if year and title_year(hit.title) == year else "the most popular"
                note = f"{others + 1} catalog items match {phrase.strip()!r}; picked {chose}" if others else ""
                return Link(LinkedTitle(phrase.strip(), hit.item_id, hit.title, how, others, cue.route, note), a, b)
    note = f"no catalog title matches {cue.phrase.strip()!r}; searched as words"
    return Link(LinkedTitle(cue.phrase.strip(), None, None, "none", 0, cue.route, note), cue.start, cue.end)


# ---- lookups -----------------------------------------------------------------------------

def title_request(phrase: str, fields: IntentFields = IntentFields(), size: int = 20,
                  exact: bool = False) -> dict[str, Any]:
    """The one search body of a title lookup: phrase matches first, fuzzy word matches second.

    Args:
        phrase: the query words that may hold a title.
        fields: field names (``title``, its ``.cjk`` subfield, ``item_id``, ``popularity``).
        size: candidates returned (what :func:`link_title` chooses from).
        exact: only titles equal to a span of two words or more can link: instead of the fuzzy
            word match, a phrase match of each pair of adjacent words (every such title holds
            one) and of a word before a year, and the CJK word match only when the phrase has
            CJK characters.
    """
    cjk = fields.title + fields.cjk_suffix
    should: list[dict[str, Any]] = [{"match_phrase": {fields.title: {"query": phrase, "boost": 4.0}}},
                                    {"match_phrase": {cjk: {"query": phrase, "boost": 4.0}}}]
    if exact:
        words = _WORD.findall(phrase)
        pairs = dict.fromkeys(zip(words, words[1:]))
        # a word before a year may be a one-word title named with its year ("heat 1995")
        spans = dict.fromkeys([f"{a} {b}" for a, b in pairs] + [a for a, b in pairs if _YEAR_WORD.fullmatch(b)])
        should += [{"match_phrase": {fields.title: {"query": span}}} for span in spans]
        if _CJK_CHAR.search(phrase):
            should.append({"match": {cjk: {"query": phrase}}})
    else:
        should += [{"match": {fields.title: {"query": phrase, "fuzziness": "AUTO", "prefix_length": 1}}},
                   {"match": {cjk: {"query": phrase}}}]
    return {"size": size, "track_total_hits": False,
            "_source": [fields.item_id, fields.title, fields.popularity],
            "query": {"bool": {"should": should, "minimum_should_match": 1}}}


_WORD = re.compile(r"[^\W_]+")
_YEAR_WORD = re.compile(r"(?:19|20)\d\d")
_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def titles_from_response(response: Mapping[str, Any], fields: IntentFields = IntentFields()) -> list[TitleHit]:
    """The candidates in a response to :func:`title_request` (hits without a title skipped)."""
    out = []
    for h in (response.get("hits") or {}).get("hits", []):
        src = h.get("_source") or {}
        title = src.get(fields.title)
        if isinstance(title, str) and title:
            pop = src.get(fields.popularity)
            out.append(TitleHit(str(src.get(fields.item_id) or h["_id"]), title,
                                float(pop) if isinstance(pop, (int, float)) else 0.0))
    return out


class TitleIndex:
    """An in-memory :data:`TitleLookup` over a few rows (every row is a candidate): for tests
    and the golden set, not for serving a catalog."""

    def __init__(self, hits: Iterable[TitleHit]):
        self.hits = list(hits)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> TitleIndex:
        """From ``{"item_id", "title", "popularity"?}`` rows."""
        return cls(TitleHit(str(r["item_id"]), str(r["title"]), float(r.get("popularity") or 0.0)) for r in rows)

    def __call__(self, phrase: str, exact: bool = False) -> list[TitleHit]:
        return list(self.hits)
