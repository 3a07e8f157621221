"""Task 3 of ``osreco eval``: how exactly the intent parser extracts filters, per language.

Two case sets: the golden queries written with the parser (``tests/golden/intents.jsonl``,
vocabularies in ``intent_vocab.json``, catalog titles per vocabulary in ``intent_titles.json``
when it is there) and, independently, the templated search queries of
task 2 with the constraints they were generated from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from osreco.evaluation.data import EvalQuery
from osreco.ingest.errors import RowError
from osreco.ingest.rows import read_rows
from osreco.plugin.errors import ConfigError

__all__ = ["read_golden", "score_intents", "run_intent", "golden_parser", "templated_intent_cases"]

Parse = Callable[[str, "str | None", "str | None"], Mapping[str, object]]
"""``(q, language, vocabulary name) -> Intent.to_dict()``."""

FILTER_KEYS = ("filters", "ranges", "exclude")


def _canonical(intent: Mapping[str, Any], linked: bool = False) -> dict[str, object]:
    """The filter part of an intent dict, order-insensitive: facet values sorted, ranges as floats;
    with ``linked``, also the linked title's item id and route (``None`` when nothing linked)."""
    facets = {f: sorted(v) for f, v in (intent.get("filters") or {}).items() if v}
    excluded = {f: sorted(v) for f, v in (intent.get("exclude") or {}).items() if v}
    ranges = {f: {op: float(x) for op, x in b.items()} for f, b in (intent.get("ranges") or {}).items() if b}
    out: dict[str, object] = {"filters": facets, "ranges": ranges, "exclude": excluded}
    if linked:
        link = intent.get("linked") or {}
        out["linked"] = {"item_id": link.get("item_id"), "route": link.get("route")} if link else None
    return out


def read_golden(path: Path) -> list[dict[str, object]]:
    """Golden cases from JSONL, one a line: ``{"q", "language"?, "vocab"?, "expected": Intent.to_dict()}``.

    Raises:
        ConfigError: the file is missing or a line is not a case (names the line).
    """
    if not path.is_file():
        raise ConfigError(f"golden intent file {path} does not exist", field="--golden",
                          fix="pass --golden PATH or drop 'intent' from --tasks")
    cases: list[dict[str, object]] = []
    for line_no, case in read_rows(path, "jsonl"):
        if isinstance(case, RowError):
            raise ConfigError(f"{path}:{line_no}: not a golden case ({case.args[0]})", field="--golden",
                              fix='write {"q": ..., "expected": {...}} on each line') from case
        try:
            cases.append({"line": line_no, "q": case.get("q") or case["query"], "language": case.get("language"),
                          "vocab": case.get("vocab"), "expected": case.get("expected") or case["intent"]})
        except (ValueError, KeyError, AttributeError, TypeError) as e:
            raise ConfigError(f"{path}:{line_no}: not a golden case ({e})", field="--golden",
                              fix='write {"q": ..., "expected": {...}} on each line') from e
    return cases


def score_intents(cases: Sequence[Mapping[str, Any]], parse: Parse, source: str) -> dict[str, object]:
    """Exact-match accuracy of the extracted filters (facets, ranges, exclusions) per language.

    Args:
        cases: ``{"q", "language"?, "vocab"?, "expected"}`` dicts.
        parse: ``(q, language, vocab name) -> Intent.to_dict()`` of the parser under test.
        source: where the cases come from (reported).

    Returns:
        ``{"golden", "cases", "languages": {lang: {"cases", "exact", "accuracy"}, "all": ...}, "misses"}``.
    """
    from osreco.plugin.intent.parser import detect_language

    per_lang: dict[str, dict[str, int]] = {}
    misses: list[dict[str, object]] = []
    for n, case in enumerate(cases, start=1):
        q = str(case["q"])
        lang = case.get("language") or detect_language(q)
        linked = "linked" in case["expected"]  # compared only where the case states it
        got = _canonical(parse(q, case.get("language"), case.get("vocab")), linked)
        want = _canonical(case["expected"], linked)
        stats = per_lang.setdefault(str(lang), {"cases": 0, "exact": 0})
        stats["cases"] += 1
        stats["exact"] += int(got == want)
        if got != want and len(misses) < 20:
            misses.append({"line": case.get("line", n), "q": q, "expected": want, "got": got})
    total = {"cases": sum(s["cases"] for s in per_lang.values()), "exact": sum(s["exact"] for s in per_lang.values())}
    languages = {lang: {**s, "accuracy": s["exact"] / s["cases"]} for lang, s in sorted(per_lang.items())}
    languages["all"] = {**total, "accuracy": total["exact"] / total["cases"] if total["cases"] else 0.0}
    return {"golden": source, "cases": total["cases"], "languages": languages, "misses": misses}


def run_intent(golden_path: Path, parse: Parse) -> dict[str, object]:
    """:func:`score_intents` on the golden file (see :func:`read_golden`)."""
    return score_intents(read_golden(golden_path), parse, str(golden_path))


def templated_intent_cases(queries: Sequence[EvalQuery]) -> list[dict[str, object]]:
    """The task-2 queries as golden-style cases: expected filters from each query's constraints.

    Returns:
        ``[{"q", "language", "vocab": "movies", "expected"}]`` (a second, independently written set).
    """
    out: list[dict[str, object]] = []
    for q in queries:
        c = q.constraints
        ranges = {"year": {"gte": float(c.year_min), "lte": float(c.year_max)}} if c.year_min is not None \
            and c.year_max is not None else {}
        out.append({"q": q.text, "language": q.language, "vocab": "movies",
                    "expected": {"filters": {"genres": sorted(c.genres)} if c.genres else {}, "ranges": ranges,
                                 "exclude": {"genres": sorted(c.exclude_genres)} if c.exclude_genres else {}}})
    return out


def golden_parser(vocab_path: Path) -> Parse:
    """The rules parser over the golden set's named vocabularies (``intent_vocab.json``) and,
    when ``intent_titles.json`` sits next to it, their catalog titles.

    Args:
        vocab_path: JSON ``{name: {facet: [values]}}``; a case picks one by its ``vocab`` key.
            ``intent_titles.json`` beside it: ``{name: [{"item_id", "title", "popularity"}]}``.

    Returns:
        ``(q, language, vocab name) -> Intent.to_dict()``.

    Raises:
        ConfigError: the vocabulary file is missing or a case names an unknown vocabulary.
    """
    from osreco.plugin.intent.parser import parse_intent
    from osreco.plugin.intent.titles import TitleIndex
    from osreco.plugin.intent.vocab import Vocabulary

    titles_path = vocab_path.with_name("intent_titles.json")
    try:
        raw = json.loads(vocab_path.read_text(encoding="utf-8"))
        raw_titles = json.loads(titles_path.read_text(encoding="utf-8")) if titles_path.is_file() else {}
        titles = {name: TitleIndex.from_rows(rows) for name, rows in raw_titles.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"golden vocabulary {vocab_path} or {titles_path.name} is unreadable: {e}",
                          field="--golden", fix="put intent_vocab.json (and optionally intent_titles.json, "
                          '{name: [{"item_id", "title", "popularity"}]}) next to the golden intents file') from e
    vocabs = {name: Vocabulary.from_values({f: v for f, v in facets.items() if v}) for name, facets in raw.items()}

    def parse(q: str, language: str | None, vocab: str | None) -> Mapping[str, object]:
        if vocab not in vocabs:
            raise ConfigError(f"golden case {q!r} names vocabulary {vocab!r}, not one of {sorted(vocabs)}",
                              field="--golden")
        return parse_intent(q, vocabs[vocab], language, titles=titles.get(vocab)).to_dict()

    return parse
