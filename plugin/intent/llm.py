"""Optional LLM intent parser: any OpenAI-compatible chat endpoint returns the intent JSON.

The reply is trusted for nothing: it must be one JSON object with exactly the keys of
``Intent.to_dict()``, facet values that are in the index vocabulary, ranges only on the
numeric fields with known operators, a known sort, and free text made only of words from
the query (so a model cannot inject text). Any failure — network, HTTP status, timeout,
malformed or invalid reply — falls back to the rules parser; the returned intent says which
parser produced it (``parser``) and why the LLM was not used (``fallback_reason``).

The request carries the reply's JSON schema with the vocabulary's values enumerated
(:func:`intent_schema`), so a server with constrained decoding (llama.cpp's) can only write
known facets and values. ``mode="combined"`` asks the LLM only when the rules parser leaves
words of the query unexplained, and adds to the rules' intent what the LLM found.

Example:
    >>> intent = parse_with_llm("90s sci-fi, no horror", vocab, url="http://127.0.0.1:8000/v1")
    >>> intent.parser, intent.fallback_reason
    ('llm', None)
"""

from __future__ import annotations

import json
import math
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from osreco.plugin.errors import ConfigError, PluginError
from osreco.plugin.intent.parser import IntentOptions, detect_language, normalize_query, parse_intent
from osreco.plugin.intent.titles import TitleLookup
from osreco.plugin.intent.types import (
    RANGE_OPS,
    SORT_KEYS,
    SORT_ORDERS,
    FacetMatch,
    Intent,
    IntentFields,
    RangeFilter,
    SortKey,
)
from osreco.plugin.intent.vocab import Embed, Vocabulary

SYSTEM_PROMPT = """You turn a shopping or movie search query into JSON. Reply with ONE JSON object and nothing else:
{"text": str, "filters": {facet: [values]}, "ranges": {field: {op: number}}, "exclude": {facet: [values]},
 "sort": null or {"field": "price"|"year"|"popularity"|"rating", "order": "asc"|"desc"}}
Rules: facet values must be copied exactly from the given vocabulary; range fields are the given numeric
fields and ops are gte, gt, lte, lt; "text" keeps only the query's remaining content words (never new words);
negated values ("not Nike", "不要恐怖片") go to "exclude"; decades are year ranges ("90s" = gte 1990, lte 1999)."""

_KEYS = ("text", "filters", "ranges", "exclude", "sort")
_WORDS = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]")


class LLMReplyError(PluginError):
    """The LLM's reply is unusable (names the offending part); the rules parser is used instead."""

    code = "llm_reply_invalid"

    def __init__(self, message: str, *, field: str):
        super().__init__(message, field=field)
        self.field = field


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask the LLM.

    Args:
        url: the chat-completions URL, or a base URL (``/chat/completions`` is appended).
        model: model name sent in the request.
        api_key: bearer token, if the endpoint wants one.
        timeout_s: socket timeout for connect and each read.
        max_values: most vocabulary values sent per facet (the prompt stays small).
        max_tokens: most tokens the reply may take (a rambling model is cut off, then rejected).

    Raises:
        ConfigError: a non-http(s) URL or a non-positive timeout.
    """

    url: str
    model: str = "gpt-4o-mini"
    api_key: str | None = None
    timeout_s: float = 2.0
    max_values: int = 200
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if not re.match(r"^https?://", self.url or ""):
            raise ConfigError(f"LLM URL {self.url!r} must start with http:// or https://", field="OSRECO_LLM_URL")
        if self.timeout_s <= 0 or self.max_values < 1:
            raise ConfigError("timeout_s must be > 0 and max_values >= 1", field="OSRECO_LLM_TIMEOUT_S")

    @property
    def endpoint(self) -> str:
        """The full chat-completions URL."""
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


def intent_schema(vocab: Vocabulary, fields: IntentFields = IntentFields(), max_values: int = 200,
                  max_text: int | None = None) -> dict[str, Any]:
    """The JSON schema of a reply: facet values enumerated from the vocabulary, known range
    fields and operators, a known sort, ``text`` at most ``max_text`` characters (the query's
    length: it may only keep the query's words). A server that decodes under a schema (llama.cpp's
    ``response_format: {"type": "json_object", "schema": ...}``) can then only write valid intents."""
    facets = {f: {"type": "array", "items": {"type": "string", "enum": list(vocab.values.get(f, ()))[:max_values]}}
              for f in fields.facets if vocab.values.get(f)}
    facet_map = {"type": "object", "properties": facets, "additionalProperties": False}
    bounds = {"type": "object", "properties": {op: {"type": "number"} for op in RANGE_OPS},
              "additionalProperties": False}
    sort = {"type": "object", "properties": {"field": {"type": "string", "enum": list(SORT_KEYS)},
                                             "order": {"type": "string", "enum": list(SORT_ORDERS)}},
            "required": ["field", "order"], "additionalProperties": False}
    return {"type": "object", "additionalProperties": False, "required": list(_KEYS),
            "properties": {"text": {"type": "string", **({"maxLength": max_text} if max_text else {})},
                           "filters": facet_map, "exclude": facet_map,
                           "ranges": {"type": "object", "properties": {f: bounds for f in fields.numeric},
                                      "additionalProperties": False},
                           "sort": {"anyOf": [{"type": "null"}, sort]}}}


def build_request(q: str, vocab: Vocabulary, config: LLMConfig,
                  fields: IntentFields = IntentFields()) -> dict[str, Any]:
    """The chat-completions request body for ``q`` (system prompt + vocabulary + query), asking
    for JSON under :func:`intent_schema` (servers without schema support still get ``json_object``)."""
    payload = {"query": q,
               "vocabulary": {f: list(vocab.values.get(f, ()))[:config.max_values] for f in fields.facets},
               "numeric_fields": list(fields.numeric)}
    return {"model": config.model, "temperature": 0, "max_tokens": config.max_tokens,
            "response_format": {"type": "json_object",
                                "schema": intent_schema(vocab, fields, config.max_values, max(1, len(q)))},
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": json.dumps(payload, ensure_ascii=False)}]}


def _call(body: dict[str, Any], config: LLMConfig) -> str:
    """POST the request; return the first choice's message content."""
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    req = urllib.request.Request(config.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=config.timeout_s) as resp:
            reply = json.loads(resp.read().decode("utf-8"))
    except ValueError as e:
        raise LLMReplyError(f"the endpoint did not return JSON: {e}", field="response") from e
    try:
        return str(reply["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError) as e:
        raise LLMReplyError("no choices[0].message.content in the reply", field="choices") from e


def _json_object(content: str) -> dict[str, Any]:
    text = content.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise LLMReplyError(f"the message is not a JSON object: {e}", field="content") from e
    if not isinstance(data, dict):
        raise LLMReplyError("the message is not a JSON object", field="content")
    return data


def _facets(data: Any, key: str, vocab: Vocabulary, fields: IntentFields) -> tuple[FacetMatch, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise LLMReplyError(f"{key} must be an object of facet -> [values]", field=key)
    out = []
    for name, values in data.items():
        if name not in fields.facets:
            raise LLMReplyError(f"{key}.{name} is not a facet {fields.facets}", field=f"{key}.{name}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise LLMReplyError(f"{key}.{name} must be a list of strings", field=f"{key}.{name}")
        for v in values:
            value = v.strip().lower()
            if not vocab.has(name, value):
                raise LLMReplyError(f"{key}.{name}: {v!r} is not in the index vocabulary", field=f"{key}.{name}")
            out.append(FacetMatch(name, value, "llm", v))
    return tuple(out)


def _ranges(data: Any, fields: IntentFields) -> tuple[RangeFilter, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise LLMReplyError("ranges must be an object of field -> {op: number}", field="ranges")
    out = []
    for name, bounds in data.items():
        if name not in fields.numeric or not isinstance(bounds, dict) or not bounds:
            raise LLMReplyError(f"ranges.{name} must be one of {fields.numeric} with bounds", field=f"ranges.{name}")
        for op, x in bounds.items():
            ok = op in RANGE_OPS and isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            if not ok:
                raise LLMReplyError(f"ranges.{name}.{op} must be one of {RANGE_OPS} with a number",
                                    field=f"ranges.{name}")
        out.append(RangeFilter(name, **{op: float(x) for op, x in bounds.items()}))
    return tuple(out)


def _sort(data: Any) -> SortKey | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != {"field", "order"} or data["field"] not in SORT_KEYS \
            or data["order"] not in SORT_ORDERS:
        raise LLMReplyError(f"sort must be null or {{field: {SORT_KEYS}, order: {SORT_ORDERS}}}", field="sort")
    return SortKey(data["field"], data["order"])


def _text(data: Any, q: str) -> str:
    if not isinstance(data, str):
        raise LLMReplyError("text must be a string", field="text")
    text = " ".join(data.split())
    allowed = set(_WORDS.findall(normalize_query(q)))
    foreign = [w for w in _WORDS.findall(normalize_query(text)) if w not in allowed]
    if foreign:
        raise LLMReplyError(f"text has words that are not in the query: {foreign[:5]}", field="text")
    return text


def intent_from_reply(data: Mapping[str, Any], q: str, vocab: Vocabulary, fields: IntentFields = IntentFields(),
                      language: str | None = None) -> Intent:
    """Validate a reply object strictly and build the intent (``parser="llm"``).

    Raises:
        LLMReplyError: naming the first invalid part.
    """
    extra = set(data) - set(_KEYS)
    if extra:
        raise LLMReplyError(f"unknown keys {sorted(extra)}; allowed: {list(_KEYS)}", field=sorted(extra)[0])
    return Intent(query=q, text=_text(data.get("text", ""), q),
                  filters=_facets(data.get("filters"), "filters", vocab, fields),
                  ranges=_ranges(data.get("ranges"), fields),
                  exclusions=_facets(data.get("exclude"), "exclude", vocab, fields),
                  sort=_sort(data.get("sort")), language=language or detect_language(normalize_query(q)),
                  parser="llm")


LLM_MODES = ("combined", "llm")
"""``combined``: the rules parser first, the LLM only for a query whose words the rules leave
unexplained (its intent adds facets, ranges and sort that the rules did not set); ``llm``: the
LLM for every query, the rules only on failure."""


def merge_intents(rules: Intent, llm: Intent) -> Intent:
    """The rules intent plus what the LLM found on fields the rules left empty (``parser="llm"``
    when the LLM added anything; its leftover text replaces the rules' when it is shorter)."""
    filters = tuple(f for f in llm.filters if f.field not in {x.field for x in rules.filters})
    exclusions = tuple(f for f in llm.exclusions if f.field not in {x.field for x in rules.exclusions})
    ranges = tuple(r for r in llm.ranges if r.field not in {x.field for x in rules.ranges})
    sort = rules.sort or llm.sort
    if not (filters or exclusions or ranges or sort != rules.sort):
        return rules
    text = llm.text if len(llm.text) < len(rules.text) else rules.text
    return replace(rules, filters=rules.filters + filters, exclusions=rules.exclusions + exclusions,
                   ranges=rules.ranges + ranges, sort=sort, text=text, parser="llm")


def parse_with_llm(q: str, vocab: Vocabulary, language: str | None = None, *, url: str,
                   timeout_s: float = 2.0, fields: IntentFields = IntentFields(), model: str = "gpt-4o-mini",
                   api_key: str | None = None, mode: str = "llm", embed: Embed | None = None,
                   titles: TitleLookup | None = None) -> Intent:
    """Ask the LLM for the intent; fall back to the rules parser on any failure.

    Args:
        q: the query.
        vocab: the index vocabulary (sent to the model and used to validate its reply).
        language: ``en``/``zh`` or ``None`` to detect.
        url, timeout_s, model, api_key: see :class:`LLMConfig`.
        fields: index field names.
        mode: one of :data:`LLM_MODES`.
        embed, titles: the rules parser's vocabulary embedder and title lookup (see ``parse_intent``).

    Returns:
        ``parser="llm"``, or the rules intent with ``fallback_reason`` set.

    Raises:
        ConfigError: an unknown mode.
    """
    if mode not in LLM_MODES:
        raise ConfigError(f"LLM mode {mode!r} is not one of {LLM_MODES}", field="OSRECO_LLM_MODE")
    config = LLMConfig(url, model, api_key, timeout_s)
    options = IntentOptions(fields=fields)
    rules = parse_intent(q, vocab, language, options=options, embed=embed, titles=titles) \
        if mode == "combined" else None
    if rules is not None and not rules.text.strip():
        return rules  # the rules explained every word: no LLM call
    try:
        data = _json_object(_call(build_request(q, vocab, config, fields), config))
        intent = intent_from_reply(data, q, vocab, fields, language)
        return merge_intents(rules, intent) if rules is not None else intent
    except LLMReplyError as e:
        reason = f"invalid LLM reply: {e}"
    except urllib.error.HTTPError as e:
        reason = f"LLM endpoint answered HTTP {e.code}"
    except TimeoutError as e:
        reason = f"LLM timed out after {timeout_s:g}s ({e})"
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", e)
        reason = (f"LLM timed out after {timeout_s:g}s" if isinstance(why, (socket.timeout, TimeoutError))
                  else f"LLM endpoint unreachable: {why}")
    intent = rules or parse_intent(q, vocab, language, options=options, embed=embed, titles=titles)
    return replace(intent, fallback_reason=reason)
