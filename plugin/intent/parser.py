"""The rules parser: a search-box query -> a typed :class:`Intent`, in English and Chinese.

Steps, each cutting what it understood out of the query so the next never sees it:

1. normalize (NFKC, lowercase, thousands separators, Chinese numerals -> digits);
1b. titles (:mod:`osreco.plugin.intent.titles`, with a ``titles`` lookup): "like X" / "类似X的"
   linked to a catalog item is cut out (``Intent.linked``, route ``similar``); a whole query
   that is exactly a title, or a quoted span ("…", 《…》), is kept as words that no later rule
   reads (title words never become filters or ranges);
2. numeric ranges (:mod:`osreco.plugin.intent.ranges`): prices, years, decades;
3. sort cues ("cheapest", "最新"); soft cues ("cheap", "便宜") only without a price range;
4. facet values linked to the index vocabulary: synonyms table, exact, fuzzy, then (with an
   ``embed`` callable and a vocabulary built with ``with_vectors``) embedding similarity;
5. negation: a facet value right after "not / no / without / except / nothing / 不要 / 除了 / 别"
   (articles and quantifiers between allowed: "not a", "without any", "nothing with", "不要任何")
   or continuing such a list with "or / 和 / 、" becomes an exclusion;
6. what is left, minus filler words, is the text for BM25 and the meaning vector.

Example:
    >>> v = Vocabulary.from_values({"brand": ["nike", "asics"], "color": ["red"],
    ...                             "category": ["running shoes"]})
    >>> intent = parse_intent("cheap red running shoes under $50, not Nike", v).to_dict()
    >>> intent["filters"]
    {'color': ['red'], 'category': ['running shoes']}
    >>> intent["text"], intent["ranges"], intent["exclude"], intent["sort"]
    ('', {'price': {'lt': 50.0}}, {'brand': ['nike']}, None)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from osreco.plugin.errors import ConfigError
from osreco.plugin.intent.lexicon import (
    LIST_JOINERS,
    NEGATION_EN,
    NEGATION_FILLER_EN,
    NEGATION_FILLER_ZH,
    NEGATION_ZH,
    REWRITES,
    SOFT_SORT_CUES,
    SORT_CUES,
    STOP_EN,
    STOP_ZH,
    SYNONYMS,
)
from osreco.plugin.intent.ranges import extract_ranges, merge_bounds, replace_cn_numerals
from osreco.plugin.intent.titles import Cue, TitleLookup, find_like, link_title
from osreco.plugin.intent.types import FacetMatch, Intent, IntentFields, LinkedTitle, SortKey
from osreco.plugin.intent.vocab import Embed, Vocabulary, normalize_key

__all__ = ["IntentOptions", "parse_intent", "detect_language", "normalize_query"]

_CJK = re.compile(r"[\u3400-\u9fff]")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9'\u2019&+.-]*[a-z0-9+]|[a-z0-9]|[\u3400-\u9fff]+")
_SYN_BY_KEY = {normalize_key(k): v for k, v in SYNONYMS.items()}
_Token = tuple[int, int, str]  # (start, end, text) of one token in the normalized query
_CJK_SYN = sorted((k for k in SYNONYMS if _CJK.search(k)), key=len, reverse=True)


@dataclass(frozen=True)
class IntentOptions:
    """Settings of the rules parser.

    Args:
        fields: index field names.
        fuzzy: link misspelled facet values ("nikey" -> nike).
        embed_threshold: minimum cosine for an embedding match.
        max_ngram: longest English phrase (in words) looked up as a facet value.

    Raises:
        ConfigError: on an out-of-range value.
    """

    fields: IntentFields = IntentFields()
    fuzzy: bool = True
    embed_threshold: float = 0.8
    max_ngram: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.embed_threshold <= 1.0:
            raise ConfigError("embed_threshold must be in (0, 1]", field="embed_threshold")
        if not 1 <= self.max_ngram <= 5:
            raise ConfigError("max_ngram must be in 1..5", field="max_ngram")


@dataclass
class _Span:
    start: int
    end: int
    match: FacetMatch
    negated: bool = False


def normalize_query(q: str) -> str:
    """NFKC, lowercase, "1,000" -> "1000", Chinese amount numerals -> digits."""
    s = unicodedata.normalize("NFKC", q).lower().replace("\u2019", "'")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    for old, new in REWRITES.items():
        s = s.replace(old, new)
    return replace_cn_numerals(s)


def detect_language(text: str) -> str:
    """``zh`` when the text has any CJK ideograph, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


def parse_intent(q: str, vocab: Vocabulary, language: str | None = None, *,
                 options: IntentOptions = IntentOptions(), embed: Embed | None = None,
                 titles: TitleLookup | None = None) -> Intent:
    """Parse a search-box query into an :class:`Intent`.

    Args:
        q: what the person typed.
        vocab: the index's facet vocabulary.
        language: ``en``/``zh``; detected from the text when ``None``.
        options: parser settings.
        embed: optional text -> unit vectors, for embedding matches (needs ``vocab.vectors``).
        titles: optional title lookup (called at most once): links "like X" and whole-query titles.

    Returns:
        the intent, ``parser="rules"``.
    """
    s = normalize_query(q)
    lang = language or detect_language(s)
    kept: list[str] = []
    linked, s = _titles(s, vocab, options, titles, kept)
    s = _protect_quotes(s, kept)
    bounds, s = extract_ranges(s)
    ranges = merge_bounds(bounds, {"price": options.fields.price, "year": options.fields.year})
    sort, s = _extract_sort(s, allow_soft=not any(b[0] == "price" for b in bounds))
    spans = _find_facets(s, vocab, options, embed)
    s = _apply_negation(s, spans)
    text = _remaining_text(s, spans, kept)
    keep = [sp for sp in spans if sp.match.value]
    return Intent(query=q, text=text, linked=linked,
                  filters=_dedupe(sp.match for sp in keep if not sp.negated),
                  ranges=ranges,
                  exclusions=_dedupe(sp.match for sp in keep if sp.negated),
                  sort=sort, language=lang, parser="rules")


_PLACEHOLDER = 0xE000  # private-use characters stand for kept spans: no rule reads them
_QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d|\u300a([^\u300b]+)\u300b|\u300c([^\u300d]+)\u300d')


def _keep(s: str, start: int, end: int, kept: list[str]) -> str:
    """``s`` with ``s[start:end]`` replaced by a placeholder; its words return in the text."""
    kept.append(s[start:end])
    return f"{s[:start]} {chr(_PLACEHOLDER + len(kept) - 1)} {s[end:]}"


def _protect_quotes(s: str, kept: list[str]) -> str:
    """Quoted spans ("...", 《...》) are kept as words: no facet, range or sort rule fires inside."""
    while len(kept) < 0xFF and (m := _QUOTED.search(s)):
        s = _keep(s, m.start(), m.end(), kept)
    return s


def _titles(s: str, vocab: Vocabulary, options: IntentOptions, titles: TitleLookup | None,
            kept: list[str]) -> tuple[LinkedTitle | None, str]:
    """Link a "like X" title (cut out) or a title the query names (kept as words), one lookup at most.

    Without a cue, the node is asked only when facet rules would fire, and only an exact title
    counts: the whole query, or a span of two words or more inside it (so "horror movies" never
    links, "Horror Hotel" and "Star Wars sci-fi" do, and no facet rule fires inside the title).
    """
    if titles is None:
        return None, s
    cue = find_like(s)
    if cue is None:
        whole = s.strip()
        if not whole or not _find_facets(whole, vocab, options, None):
            return None, s
        start = s.index(whole)
        cue = Cue(s, start, start + len(whole), start, start + len(whole), anchor="any", route="title")
    exact = cue.anchor in ("whole", "any")   # link_title tries no fuzzy match for these: no near misses needed
    link = link_title(cue, titles(cue.phrase.strip(), exact), fuzzy=options.fuzzy)
    if link.linked.item_id is None:
        return (link.linked if cue.route == "similar" else None), s
    if cue.route == "title":
        return link.linked, _keep(s, link.start, link.end, kept)
    start = cue.cut_start if link.start == cue.start else link.start
    end = cue.cut_end if link.end == cue.end else link.end
    return link.linked, f"{s[:start]} {s[end:]}"


def _dedupe(matches: Iterable[FacetMatch]) -> tuple[FacetMatch, ...]:
    seen: set[tuple[str, str]] = set()
    out: list[FacetMatch] = []
    for m in matches:
        if (m.field, m.value) not in seen:
            seen.add((m.field, m.value))
            out.append(m)
    return tuple(out)


def _cue_pattern(cues: Iterable[str]) -> re.Pattern[str]:
    alts = sorted(cues, key=len, reverse=True)
    return re.compile("|".join(re.escape(c) if _CJK.search(c) else r"(?<![a-z0-9])" + re.escape(c)
                               + r"(?![a-z0-9])" for c in alts))


_SORT_RE, _SOFT_RE = _cue_pattern(SORT_CUES), _cue_pattern(SOFT_SORT_CUES)


def _extract_sort(s: str, allow_soft: bool) -> tuple[SortKey | None, str]:
    """The first hard sort cue (else a soft one when allowed); all cues are cut out."""
    hard = _SORT_RE.search(s)
    soft = _SOFT_RE.search(s)
    sort = None
    if hard:
        sort = SortKey(*SORT_CUES[hard.group(0)])
    elif soft and allow_soft:
        sort = SortKey(*SOFT_SORT_CUES[soft.group(0)])
    s = _SORT_RE.sub(" ", s)
    return sort, _SOFT_RE.sub(" ", s)


def _synonym(phrase: str, vocab: Vocabulary) -> FacetMatch | Literal[False] | None:
    """A synonym-table hit: a match, ``False`` for a protected phrase, ``None`` for no entry."""
    entry = _SYN_BY_KEY.get(normalize_key(phrase))
    if entry is None:
        return None
    field_name, candidates = entry
    if not candidates:
        return False
    hit = vocab.resolve(candidates, field_name)
    return FacetMatch(hit[0], hit[1], "synonym", phrase) if hit else None


def _lookup(phrase: str, vocab: Vocabulary) -> FacetMatch | Literal[False] | None:
    exact = vocab.lookup(phrase)
    if exact:
        return FacetMatch(exact[0][0], exact[0][1], "exact", phrase)
    return _synonym(phrase, vocab)


def _find_facets(s: str, vocab: Vocabulary, options: IntentOptions, embed: Embed | None) -> list[_Span]:
    """All facet matches in ``s``, in text order, non-overlapping, longest first."""
    tokens: list[_Token] = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(s)]
    spans: list[_Span] = []
    leftovers: list[_Token] = []
    i = 0
    while i < len(tokens):
        start, end, tok = tokens[i]
        if _CJK.match(tok):
            spans.extend(_scan_cjk(tok, start, vocab))
            i += 1
            continue
        hit, n = _longest_phrase(tokens, i, s, vocab, options.max_ngram)
        if hit is not None:
            if hit:
                spans.append(_Span(tokens[i][0], tokens[i + n - 1][1], hit))
            i += n
            continue
        if tok not in STOP_EN and not tok.isdigit():
            leftovers.append((start, end, tok))
        i += 1
    spans.extend(_fuzzy_and_embedded(leftovers, vocab, options, embed))
    return sorted(spans, key=lambda sp: sp.start)


def _longest_phrase(tokens: list[_Token], i: int, s: str, vocab: Vocabulary,
                    max_n: int) -> tuple[FacetMatch | Literal[False] | None, int]:
    for n in range(min(max_n, len(tokens) - i), 0, -1):
        window = tokens[i:i + n]
        if any(_CJK.match(t[2]) for t in window):
            continue
        if n == 1 and window[0][2] in STOP_EN:
            return None, 1
        hit = _lookup(s[window[0][0]:window[-1][1]], vocab)
        if hit is not None:
            return hit, n
    return None, 1


def _scan_cjk(run: str, offset: int, vocab: Vocabulary) -> list[_Span]:
    """Facet phrases inside a run of CJK characters, longest match at each position."""
    keys = sorted(_CJK_SYN + vocab.cjk_values(), key=len, reverse=True)
    out, pos = [], 0
    while pos < len(run):
        for key in keys:
            if run.startswith(key, pos):
                hit = _lookup(key, vocab)
                if hit:
                    out.append(_Span(offset + pos, offset + pos + len(key), hit))
                if hit is not None:  # a match, or a protected phrase: skip past it
                    pos += len(key)
                    break
        else:
            pos += 1
    return out


def _fuzzy_and_embedded(leftovers: list[_Token], vocab: Vocabulary, options: IntentOptions,
                        embed: Embed | None) -> list[_Span]:
    spans: list[_Span] = []
    rest: list[_Token] = []
    for start, end, tok in leftovers:
        hit = vocab.fuzzy(tok) if options.fuzzy else None
        if hit:
            spans.append(_Span(start, end, hit))
        else:
            rest.append((start, end, tok))
    if embed is not None and rest and vocab.vectors is not None:
        for (start, end, _tok), hit in zip(rest, vocab.nearest([t[2] for t in rest], embed,
                                                               options.embed_threshold)):
            if hit:
                spans.append(_Span(start, end, hit))
    return spans


def _alts(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# a cue, then articles/quantifiers ("not a", "without any", "nothing with", "不要任何"), then the value
_NEG_EN = re.compile(r"(?:^|(?<=[^a-z0-9]))(?:" + _alts(NEGATION_EN) + r")(?:[\s-]+(?:"
                     + _alts(NEGATION_FILLER_EN) + r"))*[\s-]*$")
_NEG_ZH = re.compile("(?:" + _alts(NEGATION_ZH) + ")(?:" + _alts(NEGATION_FILLER_ZH) + r")*\s*$")
_JOINER = re.compile(r"^\s*(?:" + "|".join(re.escape(j) for j in LIST_JOINERS) + r")?\s*(?:no|not|不要)?\s*$")
_AFTER_ZH = re.compile(r"^\s*(?:以外|之外)")


def _apply_negation(s: str, spans: list[_Span]) -> str:
    """Mark spans that follow a negation cue; return ``s`` with those cues blanked out."""
    chars = list(s)
    prev: _Span | None = None
    for sp in spans:
        before = s[prev.end if prev else 0:sp.start]
        m = _NEG_EN.search(before) or _NEG_ZH.search(before)
        if m:
            sp.negated = True
            base = prev.end if prev else 0
            chars[base + m.start():base + m.end()] = " " * (m.end() - m.start())
        elif prev is not None and prev.negated and _continues(before, prev, sp):
            sp.negated = True
            chars[prev.end:sp.start] = " " * (sp.start - prev.end)
        if sp.negated:
            after = _AFTER_ZH.match(s, sp.end)
            if after:
                chars[after.start():after.end()] = " " * (after.end() - after.start())
        prev = sp
    return "".join(chars)


def _continues(between: str, prev: _Span, sp: _Span) -> bool:
    """Whether ``sp`` continues the negated list ending at ``prev``.

    "or", "/", "、", "或" always continue it; "and", ",", "和" or nothing only for the same facet
    ("not nike, red" keeps red; "no horror, comedy" excludes both).
    """
    between = between.lstrip().removeprefix("片")  # "恐怖片和喜剧": the genre suffix is not a joiner
    if not _JOINER.match(between):
        return False
    word = between.strip()
    return word in _STRONG_JOINERS or prev.match.field == sp.match.field


_STRONG_JOINERS = frozenset({"or", "nor", "/", "、", "或", "或者", "及", "也不要", "or no", "or not"})


_TEXT_TOKEN = re.compile(_TOKEN.pattern + "|[\ue000-\ue0ff]")


def _remaining_text(s: str, spans: list[_Span], kept: Sequence[str] = ()) -> str:
    """``s`` without matched facet phrases, punctuation, currency and filler words; kept spans
    (placeholders) come back as their own words."""
    chars = list(s)
    for sp in spans:
        if sp.match.value:
            chars[sp.start:sp.end] = " " * (sp.end - sp.start)
    words = []
    for tok in _TEXT_TOKEN.findall("".join(chars)):
        if len(tok) == 1 and _PLACEHOLDER <= ord(tok) < _PLACEHOLDER + 0x100:
            words.extend(_remaining_text(kept[ord(tok) - _PLACEHOLDER], []).split())
        elif _CJK.match(tok):
            for stop in STOP_ZH:
                tok = tok.replace(stop, " ")
            words.extend(tok.split())
        elif tok not in STOP_EN:
            words.append(tok)
    return " ".join(words)
