"""Numeric constraints in query text: prices, years and decades, in English and Chinese.

Each rule is a regular expression over the normalized (NFKC, lowercased) query and a
function from its match to a bound. Matched text is cut out of the query, so the rest of
the parser never sees it. Conventions (documented in the golden tests):

* "under / below / less than / cheaper than X", "低于/少于/不到 X" -> ``lt``;
  "up to / at most / no more than X", "X or less", "不超过/最多 X", "X 以下/以内" -> ``lte``;
  "over / above / more than X" , "超过/高于 X" -> ``gt``; "at least X", "X or more", "X 以上" -> ``gte``;
  "between A and B", "A-B", "A到B" -> ``gte A, lte B``; "X 左右" -> ``gte 0.8X, lte 1.2X``.
* A number is a *year* when the rule says so (before/after/since/in, 年) or when a range has two
  4-digit numbers in 1800..2100 and no currency; otherwise it is a *price*.
* "before 1980" -> ``year lt 1980``; "after 2000" -> ``gt 2000``; "since 2000", "2000年以后" ->
  ``gte 2000``; "in 1995", "1995年" -> ``gte = lte = 1995``.
* Decades: "90s", "1990s", "nineties", "90年代", "八十年代" -> ``gte 1990, lte 1999``; two-digit
  decades from 30 are 19xx, below 30 are 20xx; "early/mid/late" narrow to 0-3, 3-6, 6-9.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from osreco.plugin.intent.lexicon import DECADE_WORDS
from osreco.plugin.intent.types import RangeFilter

Bound = tuple[str, dict[str, float]]  # ("price" | "year", {op: value})
Handler = Callable[[re.Match[str]], Bound | None]  # a rule's match -> its bound (None: not a bound)

_CUR_PRE = r"(?P<{p}c1>\$|usd|¥|rmb)?\s*"
_NUM = r"(?P<{p}n>\d+(?:\.\d+)?)(?P<{p}k>k)?"
_CUR_POST = r"(?:\s*(?P<{p}c2>dollars?|bucks|usd|\$|元|块钱|块|美元|刀|rmb))?"


def _amount(p: str) -> str:
    return (_CUR_PRE + _NUM + _CUR_POST).format(p=p)


A, B = _amount("a"), _amount("b")
_YEAR = r"(?P<y>1[89]\d\d|20\d\d)"
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_CN_RUN = re.compile(r"[零〇一二两三四五六七八九十百千万]+(?=元|块|美元|刀|年代|以下|以内|以上|左右)"
                     r"|[零〇一二两三四五六七八九]*[十百千万][零〇一二两三四五六七八九十百千万]*")


def cn_to_int(text: str) -> int:
    """Convert a Chinese numeral ("三百五十" -> 350, "两千" -> 2000, "八十" -> 80, "九零" -> 90)."""
    if all(c in _CN_DIGITS for c in text):
        return int("".join(str(_CN_DIGITS[c]) for c in text))
    total, section, digit = 0, 0, 0
    for c in text:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        elif c == "万":
            total += (section + digit) * 10000
            section, digit = 0, 0
        else:
            section += (digit or 1) * _CN_UNITS[c]
            digit = 0
    return total + section + digit


def replace_cn_numerals(text: str) -> str:
    """Rewrite Chinese numerals that denote amounts or decades as Arabic digits."""
    return _CN_RUN.sub(lambda m: str(cn_to_int(m.group(0))), text)


def _value(m: re.Match[str], p: str) -> float:
    x = float(m.group(f"{p}n"))
    return x * 1000 if m.group(f"{p}k") else x


def _has_cur(m: re.Match[str], *prefixes: str) -> bool:
    return any(m.group(f"{p}c1") or m.group(f"{p}c2") for p in prefixes)


def _is_year(x: float) -> bool:
    return x.is_integer() and 1800 <= x <= 2100


def _decade(start: int, part: str | None) -> dict[str, float]:
    lo, hi = {"early": (0, 3), "mid": (3, 6), "late": (6, 9)}.get(part or "", (0, 9))
    return {"gte": float(start + lo), "lte": float(start + hi)}


def _decade_start(token: str) -> int:
    n = int(token)
    if n >= 100:
        return n
    return 1900 + n if n >= 30 else 2000 + n


def _pair(m: re.Match[str]) -> Bound | None:
    a, b = _value(m, "a"), _value(m, "b")
    if a > b:
        return None
    field = "year" if (_is_year(a) and _is_year(b) and not _has_cur(m, "a", "b")) else "price"
    return field, {"gte": a, "lte": b}


def _price(op: str) -> Handler:
    return lambda m: ("price", {op: _value(m, "a")})


def _year(op: str) -> Handler:
    return lambda m: ("year", {op: float(m.group("y"))} if op != "eq"
                      else {"gte": float(m.group("y")), "lte": float(m.group("y"))})


def _around(m: re.Match[str]) -> Bound:
    x = _value(m, "a")
    return "price", {"gte": round(x * 0.8, 2), "lte": round(x * 1.2, 2)}


_DEC = r"(?P<part>early|mid|late)?[\s-]*(?:the\s+)?['\u2019]?(?P<d>1[89]\d0|20\d0|\d0)'?s\b"
_DEC_WORD = r"(?P<part>early|mid|late)?[\s-]*(?:the\s+)?(?P<w>" + "|".join(DECADE_WORDS) + r")\b"
_DEC_ZH = r"(?P<d>1[89]\d0|20\d0|\d0)\s*年代(?P<part>初|中|末)?"
_ZH_PART = {"初": "early", "中": "mid", "末": "late"}


def _dec(m: re.Match[str]) -> Bound:
    part = m.group("part")
    return "year", _decade(_decade_start(m.group("d")), _ZH_PART.get(part, part))


def _dec_word(m: re.Match[str]) -> Bound:
    return "year", _decade(DECADE_WORDS[m.group("w")], m.group("part"))


def _dec_before(m: re.Match[str]) -> Bound:
    return "year", {"lt": float(_decade_start(m.group("d")))}


def _dec_after(m: re.Match[str]) -> Bound:
    return "year", {"gte": float(_decade_start(m.group("d")) + 10)}


def _dec_since(m: re.Match[str]) -> Bound:
    return "year", {"gte": float(_decade_start(m.group("d")))}


_W = r"(?<![a-z0-9])"  # left word boundary that also works next to CJK
_DECADE_CORE = r"(?:the\s+)?['\u2019]?(?P<d>1[89]\d0|20\d0|\d0)'?s\b"


def _year_span(m: re.Match[str]) -> Bound:
    return "year", {"gte": float(m.group("ya")), "lte": float(m.group("yb"))}


def _build_rules() -> list[tuple[re.Pattern[str], Handler]]:
    yr_a, yr_b = _YEAR.replace("y>", "ya>"), _YEAR.replace("y>", "yb>")
    specs: list[tuple[str, Handler]] = [
        (_W + r"(?:before|until|prior to|earlier than|pre)\s+" + _DECADE_CORE, _dec_before),
        (_W + r"(?:after|later than|post)\s+" + _DECADE_CORE, _dec_after),
        (_W + r"since\s+" + _DECADE_CORE, _dec_since),
        (_DEC_ZH, _dec), (_W + _DEC, _dec), (_W + _DEC_WORD, _dec_word),
        (_W + r"(?:between|from)\s+" + yr_a + r"\s+(?:and|to|-)\s+" + yr_b + r"\b", _year_span),
        (yr_a + r"\s*年?\s*(?:到|至|-|~)\s*" + yr_b + r"\s*年", _year_span),
        (_W + r"(?:before|until|till|prior to|earlier than|older than)\s+" + _YEAR + r"\b", _year("lt")),
        (_W + r"(?:after|later than|newer than)\s+" + _YEAR + r"\b", _year("gt")),
        (_W + r"since\s+" + _YEAR + r"\b", _year("gte")),
        (r"早于\s*" + _YEAR + r"\s*年?", _year("lt")),
        (_YEAR + r"\s*年?\s*(?:以前|之前|前)", _year("lt")),
        (r"晚于\s*" + _YEAR + r"\s*年?", _year("gt")),
        (_YEAR + r"\s*年?\s*(?:以后|之后|以来|后)", _year("gte")),
        (_W + r"(?:in|from)\s+" + _YEAR + r"\b(?!s)", _year("eq")),
        (_YEAR + r"\s*年(?!代)", _year("eq")),
        (_W + r"between\s+" + A + r"\s+(?:and|to|-)\s+" + B, _pair),
        (r"在?\s*" + A + r"\s*(?:到|至)\s*" + B + r"\s*(?:之间)?", _pair),
        (_W + r"from\s+" + A + r"\s+to\s+" + B, _pair),
        (_W + A + r"\s*(?:-|–|~)\s*" + B, _pair),
        (_W + A + r"\s+to\s+" + B, _pair),
        (_W + r"(?:under|below|less than|cheaper than|lower than|beneath|<)\s*" + A, _price("lt")),
        (r"(?:低于|少于|不到|小于|便宜于)\s*" + A, _price("lt")),
        (_W + r"(?:up to|at most|no more than|not more than|max(?:imum)?|within|<=)\s*" + A, _price("lte")),
        (r"(?:不超过|不高于|最多|至多|不多于)\s*" + A, _price("lte")),
        (A + r"\s*(?:以下|以内|之内)", _price("lte")),
        (_W + A + r"\s+(?:or less|or under|and under|or cheaper|max)\b", _price("lte")),
        (_W + r"(?:over|above|more than|greater than|higher than|more expensive than|pricier than|>)\s*"
         + A, _price("gt")),
        (r"(?:高于|超过|多于|大于|贵于)\s*" + A, _price("gt")),
        (_W + r"(?:at least|min(?:imum)?|starting at|>=)\s*" + A, _price("gte")),
        (r"(?:不低于|至少|最少|起码)\s*" + A, _price("gte")),
        (A + r"\s*以上", _price("gte")),
        (_W + A + r"(?:\s+(?:or more|and up|and above|plus)\b|\+)", _price("gte")),
        (A + r"\s*左右", _around),
    ]
    return [(re.compile(p), f) for p, f in specs]


RULES = _build_rules()


def extract_ranges(text: str) -> tuple[list[Bound], str]:
    """Find every numeric constraint and cut it out of ``text``.

    Args:
        text: the normalized query (lowercase, NFKC, Chinese numerals already rewritten).

    Returns:
        the bounds in rule order, and the text with each matched span replaced by a space.
    """
    found: list[Bound] = []
    for pattern, handle in RULES:
        def _sub(m: re.Match[str], handle: Handler = handle) -> str:
            bound = handle(m)
            if bound is None:
                return str(m.group(0))
            found.append(bound)
            return " "
        text = pattern.sub(_sub, text)
    return found, text


def merge_bounds(bounds: list[Bound], fields: dict[str, str]) -> tuple[RangeFilter, ...]:
    """Intersect bounds per field into one :class:`RangeFilter` each (price before year).

    Args:
        bounds: ``(logical field, {op: value})`` pairs.
        fields: logical name -> index field name (``{"price": "price", "year": "year"}``).

    Returns:
        range filters; the tighter bound wins when one op is given twice. A bound the index
        field's type cannot hold (``"under $"`` + fifty digits on a float field) is dropped: the
        node would refuse the whole query for it.
    """
    from osreco.plugin.schemas import NUMERIC_TYPES, TYPE_BOUNDS  # schemas -> config -> ... -> intent

    merged: dict[str, dict[str, float]] = {}
    for logical, ops in bounds:
        lo, hi = TYPE_BOUNDS[NUMERIC_TYPES.get(fields[logical], "float")]
        ops = {op: v for op, v in ops.items() if lo <= v <= hi}
        if not ops:
            continue
        cur = merged.setdefault(logical, {})
        for op, v in ops.items():
            if op in cur:
                v = max(cur[op], v) if op in ("gte", "gt") else min(cur[op], v)
            cur[op] = v
    return tuple(RangeFilter(fields[name], **merged[name]) for name in ("price", "year") if name in merged)
