"""Catalogs: the field map and row validation (rows come from :mod:`osreco.ingest.rows`).

A catalog is read as a stream of ``(line, row)`` pairs (JSONL, CSV, TSV, Parquet, recbole
atomic files); each row is validated against a :class:`FieldMap` into a :class:`CatalogItem`
or a :class:`RowError` that names the line and field. Nothing here talks to OpenSearch or
loads a model.

Example:
    >>> fields = FieldMap(id="sku", title="name", facets={"brand": "brand"})
    >>> for entry in read_catalog("items.jsonl", fields):
    ...     print(entry)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias

from osreco.ingest.errors import ConfigError, RowError
from osreco.ingest.rows import FORMATS, count_rows, detect_format, read_rows

__all__ = ["FieldMap", "CatalogItem", "CatalogEntry", "read_catalog", "validate_row", "join_fields",
           "FORMATS", "count_rows", "detect_format", "read_rows"]
NUMERIC_TYPES = ("float", "integer")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}
MAX_ID_LENGTH = 512  # OpenSearch refuses _id longer than 512 bytes
# What the mapped numeric types hold: float/double are IEEE 754 (float32 tops out at this value),
# integer/long are two's complement of 32/64 bits.
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "float": (-3.4028234663852886e38, 3.4028234663852886e38),
    "double": (-1.7976931348623157e308, 1.7976931348623157e308),
    "integer": (-(2 ** 31), 2 ** 31 - 1), "long": (-(2 ** 63), 2 ** 63 - 1)}
# Dates: years 1..9999 (what ISO 8601 strings and OpenSearch's date parsers round-trip); epoch
# seconds are held to the same range.
MIN_EPOCH_S, MAX_EPOCH_S = -62135596800, 253402300799


@dataclass(frozen=True)
class FieldMap:
    """Which catalog column feeds which index field. Keys are index fields, values columns.

    Args:
        id: column holding the item id (becomes ``_id`` and ``item_id``).
        title: column holding the title (required, non-empty).
        text: columns joined (blank line between) into the ``text`` field.
        facets: index facet -> column; values are trimmed, lowercased, may be lists.
        numeric: index field -> (column, "float" | "integer").
        dates: index date field -> column (ISO 8601 date or datetime, or epoch seconds).
        image: column holding an image path or URL.
        audio: column holding an audio path or URL (transcribed into ``transcript``).
        deleted: column that marks a row deleted (truthy -> the item is removed).
        embed_fields: index fields whose values make the text that is embedded, in order.
        list_separator: separator that splits a facet string into several values (CSV).
    """

    id: str = "item_id"
    title: str = "title"
    text: tuple[str, ...] = ("text",)
    facets: Mapping[str, str] = field(default_factory=dict)
    numeric: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    dates: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    audio: str | None = None
    deleted: str | None = None
    embed_fields: tuple[str, ...] = ("title", "text")
    list_separator: str = "|"

    def __post_init__(self) -> None:
        if not self.id or not self.title:
            raise ConfigError("the field map needs an id and a title column", field="id/title",
                              fix="pass --id-field and --title-field, or set them in the schema file")
        for name, (column, kind) in self.numeric.items():
            if kind not in NUMERIC_TYPES:
                raise ConfigError(f"numeric field {name!r} (column {column!r}) has type {kind!r}",
                                  field=f"numeric.{name}", fix=f"use one of {NUMERIC_TYPES}")
        known = {"title", "text", *self.facets, *self.numeric, *self.dates}
        for name in self.embed_fields:
            if name not in known:
                raise ConfigError(f"embed field {name!r} is not a mapped index field",
                                  field="embed_fields", fix=f"choose among {sorted(known)}")
        if not self.list_separator:
            raise ConfigError("list_separator must not be empty", field="list_separator")

    @classmethod
    def from_dict(cls, spec: Mapping[str, object], source: str = "schema") -> FieldMap:
        """Build from a schema dict (the ``--schema`` JSON file).

        Args:
            spec: keys ``id``, ``title``, ``text`` (str or list), ``facets`` (dict or list),
                ``numeric`` (dict name -> column or [column, type] or {"column","type"}),
                ``dates`` (dict or list), ``image``, ``audio``, ``deleted``, ``embed_fields``,
                ``list_separator``.
            source: where the dict came from, for error messages.

        Returns:
            The validated field map.

        Raises:
            ConfigError: unknown keys or badly shaped values.
        """
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = set(spec) - allowed
        if unknown:
            raise ConfigError(f"{source}: unknown schema keys {sorted(unknown)}", field=sorted(unknown)[0],
                              fix=f"allowed keys: {sorted(allowed)}")
        kwargs: dict[str, Any] = {k: v for k, v in spec.items() if k in ("id", "title", "image", "audio", "deleted",
                                                                      "list_separator")}
        if "text" in spec:
            kwargs["text"] = _as_tuple(spec["text"])
        if "embed_fields" in spec:
            kwargs["embed_fields"] = _as_tuple(spec["embed_fields"])
        for key in ("facets", "dates"):
            if key in spec:
                kwargs[key] = _as_mapping(spec[key], source, key)
        if "numeric" in spec:
            kwargs["numeric"] = {name: _numeric_entry(value, source, name)
                                 for name, value in _as_mapping(spec["numeric"], source, "numeric",
                                                                keep_values=True).items()}
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> FieldMap:
        """Read a JSON schema file; raises ConfigError naming the file when it is unusable."""
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read schema file {path}: {e}", field="--schema",
                              fix="pass a JSON object such as {\"id\": \"sku\", \"title\": \"name\"}") from e
        if not isinstance(spec, dict):
            raise ConfigError(f"schema file {path} must hold a JSON object", field="--schema")
        return cls.from_dict(spec, source=str(path))


def _as_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value)
    raise ConfigError(f"expected a name or a list of names, got {value!r}", field="text/embed_fields")


def _as_mapping(value: object, source: str, key: str, keep_values: bool = False) -> dict[str, object]:
    """A list of names maps each name to itself; a dict is taken as index field -> column."""
    if isinstance(value, (list, tuple)):
        return {str(v): str(v) for v in value}
    if isinstance(value, dict):
        return {str(k): (v if keep_values else str(v)) for k, v in value.items()}
    raise ConfigError(f"{source}: {key!r} must be a list of names or an object", field=key)


def _numeric_entry(value: object, source: str, name: str) -> tuple[str, str]:
    if isinstance(value, str):
        return (value, "float")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (str(value[0]), str(value[1]))
    if isinstance(value, dict) and "column" in value:
        return (str(value["column"]), str(value.get("type", "float")))
    raise ConfigError(f"{source}: numeric.{name} must be a column, [column, type] or "
                      "{\"column\": ..., \"type\": ...}", field=f"numeric.{name}")


@dataclass(frozen=True)
class CatalogItem:
    """One validated catalog row, already shaped like the index document (without vectors)."""

    item_id: str
    line: int
    fields: Mapping[str, object]
    embed_text: str
    deleted: bool = False

    def content_hash(self, artifact_id: str) -> str:
        """SHA-256 over the document fields and the model's artifact id (a new model re-embeds)."""
        payload = json.dumps([artifact_id, self.fields], sort_keys=True, ensure_ascii=False,
                             separators=(",", ":"), default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


CatalogEntry: TypeAlias = CatalogItem | RowError


def read_catalog(path: str | Path, fields: FieldMap, fmt: str | None = None) -> Iterator[CatalogEntry]:
    """Stream validated items (CatalogItem) and invalid rows (RowError) in file order.

    A recbole atomic file's ``token_seq`` value (a list of the tokens split at spaces) is joined
    back with spaces where the id, title, text, image or a date is read from it.

    Raises:
        CatalogError: the file cannot be read at all.
    """
    atomic = detect_format(path, fmt) == "atomic"
    single = {fields.id, fields.title, *fields.text, *fields.dates.values(), *([fields.image] if fields.image else []),
              *([fields.audio] if fields.audio else [])}
    for line, row in read_rows(path, fmt):
        if isinstance(row, RowError):
            if row.row is not None:  # parsed, then refused: it still names its item (for --sync)
                row.context.setdefault("item_id", row_item_id(row.row, fields.id))
            yield row
            continue
        if atomic:
            row = {k: (" ".join(map(str, v)) if k in single and isinstance(v, list) else v) for k, v in row.items()}
        try:
            yield validate_row(row, line, fields)
        except RowError as e:
            e.context.setdefault("item_id", row_item_id(row, fields.id))  # for dead letters and --sync
            yield e


def row_item_id(row: Mapping[str, object], column: str) -> str | None:
    """The item id a refused row still names (so ``--sync`` keeps that item), or None when unusable."""
    try:
        return _clean_id(row.get(column), 0, column)
    except RowError:
        return None


def validate_row(row: Mapping[str, object], line: int, fields: FieldMap) -> CatalogItem:
    """Turn one raw row into a CatalogItem.

    Args:
        row: column -> value, as read.
        line: the row's line number (for errors).
        fields: the field map.

    Returns:
        The item with normalized fields: facets trimmed and lowercased lists, numerics typed,
        dates as ISO strings.

    Raises:
        RowError: a required value is missing, a value has the wrong shape (an object or list where
            one value belongs, a boolean where text belongs) or is outside what its mapped type
            holds; names the line and the field.
    """
    item_id = _clean_id(row.get(fields.id), line, fields.id)
    deleted = _truthy(row.get(fields.deleted), line, fields.deleted) if fields.deleted else False
    title = _text(_scalar(row.get(fields.title), line, fields.title))
    if not title and not deleted:
        raise RowError(f"item {item_id!r} has no title", line=line, field=fields.title,
                       fix=f"give every row a non-empty {fields.title!r}")
    doc: dict[str, object] = {"item_id": item_id, "title": title}
    text = "\n\n".join(t for t in (_text(_scalar(row.get(c), line, c)) for c in fields.text) if t)
    if text:
        doc["text"] = text
    for name, column in fields.facets.items():
        values = _facet(row.get(column), fields.list_separator, line, column)
        if values:
            doc[name] = values
    for name, (column, kind) in fields.numeric.items():
        value = _number(row.get(column), kind, line, column)
        if value is not None:
            doc[name] = value
    for name, column in fields.dates.items():
        day = _date(row.get(column), line, column)
        if day is not None:
            doc[name] = day
    if fields.image:
        image = _text(_scalar(row.get(fields.image), line, fields.image))
        if image:
            doc["image"] = image
    if fields.audio:
        audio = _text(_scalar(row.get(fields.audio), line, fields.audio))
        if audio:
            doc["audio"] = audio
    return CatalogItem(item_id=item_id, line=line, fields=doc, embed_text=join_fields(doc, fields.embed_fields),
                       deleted=deleted)


def _scalar(value: object, line: int, column: str) -> object:
    """``value`` when it can stand for one text value (a string or a number), else a RowError.

    Objects, lists and binary values are refused (their Python spelling is no text), and so
    are booleans: ``true`` as a title, id or text is a mistake in the export, not a word.
    """
    if isinstance(value, (dict, list, tuple, bytes, bytearray)):
        kind = "an object" if isinstance(value, dict) else "binary" if isinstance(value, (bytes, bytearray)) \
            else "a list"
        raise RowError(f"{column!r} is {kind}, expected one value", line=line, field=column,
                       fix=f"write {column!r} as a string (join list values before the export)")
    if isinstance(value, bool):
        raise RowError(f"{column!r} is the boolean {str(value).lower()}, expected text", line=line, field=column,
                       fix=f"write {column!r} as a string, or map this column as a facet")
    return value


def _clean_id(value: object, line: int, column: str) -> str:
    value = _scalar(value, line, column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = _text(value)
    if not text:
        raise RowError("the row has no item id", line=line, field=column, fix=f"give every row a {column!r}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:  # a refused row may quote a surrogate
        raise RowError(f"item id longer than {MAX_ID_LENGTH} bytes", line=line, field=column)
    return text


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


def _facet(value: object, separator: str, line: int, column: str) -> list[str]:
    """Trimmed, lowercased, distinct values: a list of scalars, or a string split at ``separator``.

    Booleans become ``"true"``/``"false"``; an object, or a list or object inside the list, is refused.
    """
    if value is None:
        return []
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, (list, tuple)):
        raw: list[object] = []
        for v in value:
            if isinstance(v, (dict, list, tuple, bytes, bytearray)):
                raise RowError(f"{column!r} holds a nested {'object' if isinstance(v, dict) else 'list or binary'}"
                               ", expected a list of values", line=line, field=column,
                               fix=f"write {column!r} as a string or a flat list of strings")
            raw.append(str(v).lower() if isinstance(v, bool) else v)
    else:
        raw = list(str(_scalar(value, line, column)).split(separator))
    seen: dict[str, None] = {}
    for v in raw:
        v = _text(v).lower()
        if v:
            seen.setdefault(v, None)
    return list(seen)


def _number(value: object, kind: str, line: int, column: str) -> float | int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RowError(f"{column!r} is a boolean, expected {kind}", line=line, field=column)
    integral = kind in ("integer", "long")
    number: float | int
    try:
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and integral and value.strip().lstrip("+-").isdigit():
            number = int(value.strip())
        else:
            number = (float(str(value).strip().lstrip("$")) if isinstance(value, str)
                      else float(value))  # type: ignore[arg-type]  # any cell value: TypeError is caught
    except (TypeError, ValueError, OverflowError) as e:
        raise RowError(f"{column!r} = {_short(value)} is not a number", line=line, field=column,
                       fix=f"write {column!r} as {'an integer' if integral else 'a number'}, "
                                "or leave it empty") from e
    if isinstance(number, float) and not math.isfinite(number):
        raise RowError(f"{column!r} = {_short(value)} is not finite", line=line, field=column)
    if integral:
        if isinstance(number, float):
            if not number.is_integer():
                raise RowError(f"{column!r} = {_short(value)} is not an integer", line=line, field=column)
            number = int(number)
    low, high = NUMBER_RANGES.get(kind, NUMBER_RANGES["double"])
    if not low <= number <= high:
        span = f"{low}..{high}" if integral else f"{low:.8g}..{high:.8g}"
        raise RowError(f"{column!r} = {_short(value)} is outside the range of the {kind} field ({span})",
                       line=line, field=column,
                       fix=f"correct the value, or map {column!r} as a wider type")
    return number if integral else float(number)


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a reason names the value, not a whole blob)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _date(value: object, line: int, column: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not MIN_EPOCH_S <= value <= MAX_EPOCH_S:  # also refuses NaN and infinities
            raise RowError(f"{column!r} = {_short(value)} as epoch seconds is outside the years 1..9999",
                           line=line, field=column,
                           fix="write epoch seconds (not milliseconds) or an ISO 8601 date, years 1..9999")
        return datetime.fromtimestamp(float(value), tz=timezone.utc).isoformat()
    text = str(_scalar(value, line, column)).strip()
    try:
        return (datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text or " " in text
                else date.fromisoformat(text)).isoformat()
    except (ValueError, OverflowError) as e:
        raise RowError(f"{column!r} = {_short(value)} is not an ISO 8601 date in the years 1..9999", line=line,
                       field=column, fix="write dates as YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS") from e


def _truthy(value: object, line: int, column: str | None) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(_scalar(value, line, column or "deleted")).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowError(f"{column!r} = {value!r} is not a boolean", line=line, field=column,
                   fix="use true/false, 1/0 or leave it empty")


def join_fields(doc: Mapping[str, object], names: tuple[str, ...]) -> str:
    """The text a model reads for an item: the named fields joined by ". " (lists by ", "),
    empty ones skipped. Ingest embeds it; the sidecar's reranker reads the same from ``_source``."""
    parts = []
    for name in names:
        value = doc.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if value not in (None, ""):
            parts.append(str(value))
    return ". ".join(parts)
