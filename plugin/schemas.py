"""Strict request validation: unknown fields, wrong types and out-of-range values are a 400
that names the field. Pure functions from decoded JSON / query args to frozen requests.

Text is valid Unicode or a 400: a lone surrogate (``"\\ud800"`` in JSON) or bytes that are not
UTF-8 (in the path or the query string) never reach the node. Range filter bounds must fit the
index's field type (:data:`NUMERIC_TYPES`, the item index contract's numeric fields): float
fields within float32, integer fields within 32 bits.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from osreco.cf.events import DWELL_CAP_S, EVENT_KINDS, event_problem
from osreco.cf.privacy import is_pseudonym
from osreco.ingest.index_spec import DEFAULT_NUMERIC
from osreco.plugin.config import Limits
from osreco.plugin.errors import PayloadTooLargeError, RequestError

LANGUAGES = ("en", "zh")
SIMILAR_BY = ("image", "text", "taste", "all")
FLOAT32_MAX = 3.4028234663852886e38  # the events index stores ``value`` as a float
RANGE_OPS = ("gte", "gt", "lte", "lt")
_FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_ID_RE = re.compile(r"^[^\x00-\x1f]{1,128}$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
NUMERIC_TYPES: Mapping[str, str] = dict(DEFAULT_NUMERIC)
"""Range-filterable field -> its type in the item index (docs/contracts.md); other names are
checked as ``float``, the narrowest numeric type, before the parser rejects or accepts them."""
TYPE_BOUNDS: Mapping[str, tuple[float, float]] = {
    "float": (-FLOAT32_MAX, FLOAT32_MAX), "integer": (-2.0**31, 2.0**31 - 1),
    "long": (-2.0**63, 2.0**63 - 1), "double": (-sys.float_info.max, sys.float_info.max)}

FilterValue = tuple[str, ...] | dict[str, float]


@dataclass(frozen=True)
class SearchRequest:
    q: str
    user_id: str | None = None
    filters: tuple[tuple[str, FilterValue], ...] = ()
    k: int = 10
    page: int = 1
    language: str | None = None
    image: bytes | None = None
    """The query photo's raw bytes (size-checked here, decoded and checked by the image search)."""
    audio: bytes | None = None
    """The spoken query's raw bytes (size-checked here, decoded, capped and transcribed by the voice search)."""

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.k


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    kind: str
    value: float | None = None
    timestamp: str | None = None
    """ISO 8601 UTC (``...Z``), normalized by :func:`parse_timestamp`; ``None``: the arrival time."""
    query: str | None = None
    query_id: str | None = None
    """The ``query_id`` of the response that showed the item (required for an impression)."""
    position: int | None = None
    """1-based rank of the item as shown (required for an impression)."""
    session_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class PageRequest:
    """``k`` results of a recommend/similar call (``user_id`` for recommend)."""

    k: int = 10
    user_id: str | None = None
    by: str | None = None
    """Similar items: which signals (``image``, ``text``, ``taste``, ``all``); None = the default blend."""


def safe_name(name: str) -> str:
    """``name`` for an error message: lone surrogates escaped (``\\ud800``), so the JSON
    error body stays valid UTF-8."""
    return name if not _SURROGATE_RE.search(name) else name.encode("utf-8", "backslashreplace").decode()


def _check_keys(body: Mapping[str, object], allowed: tuple[str, ...], where: str) -> None:
    for key in body:
        if key not in allowed:
            raise RequestError(f"unknown field {safe_name(key)!r} in {where}", field=safe_name(key),
                               fix=f"allowed fields: {', '.join(allowed)}")


def check_utf8(raw: bytes, field: str) -> str:
    """``raw`` decoded as UTF-8, strictly (a path or query-string part as sent).

    Raises:
        RequestError: the bytes are not UTF-8 (e.g. an encoded lone surrogate ``%ED%A0%80``).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"{field} is not valid UTF-8", field=field,
                           fix="percent-encode text as UTF-8") from e


def _object(body: object, where: str) -> Mapping[str, object]:
    if not isinstance(body, dict):
        raise RequestError(f"{where} must be a JSON object", field=where)
    return body


def _int(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{field} must be an integer", field=field)
    if not lo <= value <= hi:
        raise RequestError(f"{field}={value} is outside {lo}..{hi}", field=field)
    return value


def _str(value: object, field: str, max_len: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{field} must be a string", field=field)
    if _SURROGATE_RE.search(value):
        raise RequestError(f"{field} is not valid Unicode (it holds a lone surrogate)", field=field,
                           fix="send UTF-8 text; characters outside the BMP as a surrogate pair")
    if "\x00" in value:
        raise RequestError(f"{field} contains a NUL character", field=field)
    if not allow_empty and not value.strip():
        raise RequestError(f"{field} must not be empty", field=field)
    if len(value) > max_len:
        raise RequestError(f"{field} is longer than {max_len} characters", field=field)
    return value


def parse_identifier(value: object, field: str) -> str:
    text = _str(value, field, 128)
    if not _ID_RE.match(text):
        raise RequestError(f"{field} must be 1-128 printable characters", field=field)
    return text


def parse_user_id(value: object, field: str) -> str:
    """A user id: an identifier that is not shaped like a pseudonym (``u_`` + 64 hex), which would
    otherwise address the user it was made from."""
    text = parse_identifier(value, field)
    if is_pseudonym(text):
        raise RequestError(f"{field} looks like a pseudonym (u_ + 64 hex digits); pseudonyms are not user ids",
                           field=field, fix="send the raw user id")
    return text


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{field} must be a finite number", field=field)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(f"{field} must be a finite number", field=field)
    return number


def range_bound(name: str, op: str, value: object) -> float:
    """One bound of a range filter on ``name``, within the range its index type can hold.

    Raises:
        RequestError: not a finite number, or outside the field type's range (names the field).
    """
    field = f"filters.{name}.{op}"
    number = _number(value, field)
    kind = NUMERIC_TYPES.get(name, "float")
    lo, hi = TYPE_BOUNDS[kind]
    if not lo <= number <= hi:
        raise RequestError(f"{field}={number:g} is outside the range of the {kind} field {name!r} "
                           f"({lo:g}..{hi:g})", field=field, fix="use a bound the field can hold")
    return number


def parse_filters(raw: object) -> tuple[tuple[str, FilterValue], ...]:
    """``{"brand": "nike" | ["a", "b"], "price": {"lte": 50}}`` -> sorted, typed pairs."""
    body = _object(raw, "filters")
    out: list[tuple[str, FilterValue]] = []
    for name, value in sorted(body.items()):
        field = f"filters.{name}"
        if not _FIELD_RE.match(name):
            raise RequestError(f"filter name {safe_name(name)!r} is not a field name",
                               field=f"filters.{safe_name(name)}")
        if isinstance(value, str):
            out.append((name, (_str(value, field, 128).strip().lower(),)))
        elif isinstance(value, list):
            if not 1 <= len(value) <= 50:
                raise RequestError(f"{field} must list 1..50 values", field=field)
            out.append((name, tuple(_str(v, field, 128).strip().lower() for v in value)))
        elif isinstance(value, dict):
            if not value:
                raise RequestError(f"{field} needs one of {RANGE_OPS}", field=field)
            _check_keys(value, RANGE_OPS, field)
            out.append((name, {op: range_bound(name, op, v) for op, v in value.items()}))
        else:
            raise RequestError(f"{field} must be a string, a list of strings or a range object",
                               field=field)
    return tuple(out)


def parse_search(raw: object, limits: Limits) -> SearchRequest:
    """Validate a ``POST /v1/search`` body.

    Raises:
        RequestError: naming the first invalid field.
    """
    body = _object(raw, "body")
    _check_keys(body, ("q", "user_id", "filters", "k", "page", "language", "image", "audio"), "search request")
    image = parse_image_input(body.get("image"), limits)
    audio = parse_audio_input(body.get("audio"), limits)
    if "q" not in body:
        if image is None and audio is None:
            raise RequestError("q is required", field="q", fix="send q, an image, spoken audio, or a combination")
        body = {**body, "q": ""}
    k = _int(body.get("k", 10), "k", 1, limits.max_k)
    page = _int(body.get("page", 1), "page", 1, limits.max_page)
    if page * k > limits.max_depth:
        raise RequestError(f"page * k = {page * k} is deeper than {limits.max_depth}", field="page",
                           fix="narrow the query instead of paging deeper")
    language = body.get("language")
    if language is not None and language not in LANGUAGES:
        raise RequestError(f"language must be one of {LANGUAGES}", field="language")
    user_id = body.get("user_id")
    return SearchRequest(
        q=_str(body["q"], "q", limits.max_q_chars, allow_empty=image is not None or audio is not None).strip(),
        user_id=None if user_id is None else parse_user_id(user_id, "user_id"),
        filters=parse_filters(body["filters"]) if body.get("filters") is not None else (),
        k=k, page=page, language=language, image=image, audio=audio)


def parse_image_input(value: object, limits: Limits) -> bytes | None:
    """The search's query image (see :func:`parse_media_input`); decoding the picture itself
    (format, pixels, corruption) is the image search's check."""
    return parse_media_input(value, "image", limits.max_image_bytes, "an image", "send a JPEG, PNG or WebP picture")


def parse_audio_input(value: object, limits: Limits) -> bytes | None:
    """The search's spoken query (see :func:`parse_media_input`); the format, duration and
    silence are the voice search's checks."""
    return parse_media_input(value, "audio", limits.max_audio_bytes, "audio",
                             "send wav, flac, ogg or mp3 audio")


def parse_media_input(value: object, name: str, max_bytes: int, what: str, fix_empty: str) -> bytes | None:
    """A media field of a search: base64 text (a ``data:...;base64,`` URL too) or raw bytes (a
    multipart file), at most ``max_bytes`` decoded; ``None`` when absent.

    Raises:
        RequestError: not base64 or empty. PayloadTooLargeError: over the size limit.
    """
    import base64
    import binascii

    if value is None:
        return None
    upload = "send the file's bytes base64-encoded, or upload it as multipart/form-data"
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        if len(text) > (max_bytes + 2) // 3 * 4 + 8:
            raise PayloadTooLargeError(f"{name} is over the limit of {max_bytes} bytes",
                                       field=name, fix=f"send {what} of at most {max_bytes} bytes")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise RequestError(f"{name} is not valid base64: {e}", field=name, fix=upload) from e
    else:
        raise RequestError(f"{name} must be a base64 string", field=name, fix=upload)
    if not data:
        raise RequestError(f"{name} is empty", field=name, fix=fix_empty)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{name} is {len(data)} bytes, over the limit of {max_bytes} bytes",
                                   field=name, fix=f"send {what} of at most {max_bytes} bytes")
    return data


def parse_search_form(form: Mapping[str, str], files: Mapping[str, Any], limits: Limits) -> SearchRequest:
    """Validate a multipart ``POST /v1/search``: the fields of the JSON body as form fields
    (``filters`` as JSON text), the picture as the file part ``image``, a recording as ``audio``.

    Raises:
        RequestError: naming the first invalid field.
    """
    import json

    extra = set(files) - {"image", "audio"}
    if extra:
        raise RequestError(f"unknown file part {sorted(extra)[0]!r}", field=sorted(extra)[0],
                           fix="upload the picture as the part named image, a recording as audio")
    body: dict[str, object] = {}
    for key, value in form.items():
        if key in ("k", "page"):
            body[key] = int(value) if value.strip().isdigit() else value
        elif key == "filters":
            try:
                body[key] = json.loads(value)
            except ValueError as e:
                raise RequestError(f"filters is not valid JSON: {e}", field="filters") from e
        else:
            body[key] = value
    for part, cap, what in (("image", limits.max_image_bytes, "an image"), ("audio", limits.max_audio_bytes, "audio")):
        upload = files.get(part)
        if upload is not None:
            data = upload.read(cap + 1)
            if len(data) > cap:
                raise PayloadTooLargeError(f"{part} is over the limit of {cap} bytes", field=part,
                                           fix=f"send {what} of at most {cap} bytes")
            body[part] = data
    return parse_search(body, limits)


def parse_event(raw: object, where: str = "event", future_s: float = 300.0,
                now: datetime | None = None) -> Event:
    """Validate one event object; its timestamp comes back as ISO 8601 UTC (``...Z``) or ``None``.

    ``future_s``: how far past ``now`` the timestamp may lie. ``event_id`` (optional) is the
    client's idempotency key: an event with an id already stored is not stored again. An
    impression needs ``query_id`` and ``position``; a ``position`` is 1-based; a dwell needs a
    positive ``value`` (seconds, capped at :data:`~osreco.cf.events.DWELL_CAP_S`).
    """
    body = _object(raw, where)
    _check_keys(body, tuple(Event.__dataclass_fields__), where)
    for name in ("user_id", "item_id", "kind"):
        if name not in body:
            raise RequestError(f"{name} is required", field=f"{where}.{name}")
    kind = body["kind"]
    if kind not in EVENT_KINDS:
        raise RequestError(f"kind must be one of {EVENT_KINDS}", field=f"{where}.kind")
    value = None if body.get("value") is None else _number(body["value"], f"{where}.value")
    if value is not None and abs(value) > FLOAT32_MAX:
        raise RequestError(f"value must be within +-{FLOAT32_MAX:g} (stored as a 32-bit float)",
                           field=f"{where}.value")
    if kind == "rating" and (value is None or not 0.0 <= value <= 10.0):
        raise RequestError("a rating needs a value in 0..10", field=f"{where}.value")
    ts = parse_timestamp(body.get("timestamp"), f"{where}.timestamp", future_s, now)
    pos = body.get("position")
    position = None if pos is None else _int(pos, f"{where}.position", 1, 10_000)
    query_id = None if body.get("query_id") is None else parse_identifier(body["query_id"], f"{where}.query_id")
    problem = event_problem(kind, value, query_id, position)
    if problem is not None:
        raise RequestError(problem[1], field=f"{where}.{problem[0]}",
                           fix="send the query_id and position the search/recommend response gave the item"
                           if kind == "impression" else None)
    if kind == "dwell" and value is not None:
        value = min(value, DWELL_CAP_S)
    return Event(
        user_id=parse_user_id(body["user_id"], f"{where}.user_id"),
        item_id=parse_identifier(body["item_id"], f"{where}.item_id"), kind=kind, value=value,
        timestamp=ts,
        query=None if body.get("query") is None else _str(body["query"], f"{where}.query", 512, True),
        query_id=query_id, position=position,
        session_id=None if body.get("session_id") is None else parse_identifier(body["session_id"],
                                                                            f"{where}.session_id"),
        event_id=None if body.get("event_id") is None else parse_identifier(body["event_id"], f"{where}.event_id"))


def parse_timestamp(value: object, field: str, future_s: float = 300.0, now: datetime | None = None) -> str | None:
    """ISO 8601 (an offset, or none for UTC) or epoch seconds -> ISO 8601 UTC ending in ``Z``.

    Refused (400 naming ``field``): not ISO 8601, before 1970, or more than ``future_s`` seconds
    after ``now``; ``None`` stays ``None`` (the arrival time is used).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = _str(value, field, 40)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        except (ValueError, OverflowError) as e:
            raise RequestError(f"{field} {text!r} is not an ISO 8601 time with a valid offset", field=field,
                               fix="send e.g. 2024-05-01T10:00:00Z or 2024-05-01T12:00:00+02:00") from e
    else:
        seconds = _number(value, field)
        if not 0 <= seconds <= 1e11:
            raise RequestError(f"{field} must be epoch seconds in 0..1e11", field=field)
        parsed = datetime.fromtimestamp(seconds, timezone.utc)
    if parsed.year < 1970:
        raise RequestError(f"{field} is before 1970", field=field)
    limit = (now or datetime.now(timezone.utc)) + timedelta(seconds=future_s)
    if parsed > limit:
        raise RequestError(f"{field} {parsed.isoformat()} is more than {future_s:g} s in the future", field=field,
                           fix="send the time the event happened (check the client's clock and time zone)")
    return parsed.isoformat().replace("+00:00", "Z")


def parse_events(raw: object, limits: Limits) -> tuple[Event, ...]:
    """One event object, or ``{"events": [...]}`` with 1..max_events events, all validated before
    any is stored (the first invalid one is named, e.g. ``events[3].timestamp``)."""
    body = _object(raw, "body")
    now = datetime.now(timezone.utc)
    if "events" not in body:
        return (parse_event(body, "event", limits.event_future_s, now),)
    _check_keys(body, ("events",), "event batch")
    events = body["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= limits.max_events:
        raise RequestError(f"events must be a list of 1..{limits.max_events} events", field="events")
    return tuple(parse_event(e, f"events[{i}]", limits.event_future_s, now) for i, e in enumerate(events))


def parse_page_args(args: Mapping[str, str], limits: Limits, need_user: bool) -> PageRequest:
    """Validate query-string args ``k`` (and ``user_id`` when ``need_user``)."""
    allowed = ("k", "user_id") if need_user else ("k", "by")
    _check_keys(args, allowed, "query string")
    raw_k = args.get("k", "10")
    if not re.fullmatch(r"\d{1,4}", raw_k):
        raise RequestError("k must be an integer", field="k")
    k = _int(int(raw_k), "k", 1, limits.max_k)
    if not need_user:
        by = args.get("by")
        if by is not None and by not in SIMILAR_BY:
            raise RequestError(f"by must be one of {', '.join(SIMILAR_BY)}", field="by")
        return PageRequest(k=k, by=by)
    if "user_id" not in args:
        raise RequestError("user_id is required", field="user_id")
    return PageRequest(k=k, user_id=parse_user_id(args["user_id"], "user_id"))
