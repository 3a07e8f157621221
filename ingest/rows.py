"""The one reader of data rows: JSONL, CSV, TSV, Parquet and recbole atomic files.

Every reader of a data file (catalogs, interactions, training events, golden cases) gets
its rows from :func:`read_rows` as ``(line, row)`` pairs: ``row`` is a dict (column -> value)
or, for a row that cannot be read, one :class:`RowError` naming the line. What a row
means (an item, an event) is left to the caller.

No row can stop the reader, whatever its bytes: a line longer than :data:`MAX_LINE_BYTES`,
JSON nested deeper than :data:`MAX_JSON_DEPTH` (checked before parsing, so nothing recurses),
bytes that are not UTF-8 (the error names the byte offset; nothing is replaced silently) and
anything the JSON or CSV parser refuses each become one RowError. A leading UTF-8 byte order
mark is an encoding marker, not data.

Lines are 1-based physical lines (split at ``\\n``) for JSONL, CSV/TSV (the header is line 1)
and atomic files, and 1-based row numbers for Parquet. Blank lines are skipped.

Example:
    >>> for line, row in read_rows("clicks.csv"):
    ...     print(line, row)
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from osreco.ingest.errors import CatalogError, ConfigError, RowError

FORMATS = ("jsonl", "csv", "tsv", "parquet", "atomic")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
              ".parquet": "parquet", ".pq": "parquet", ".item": "atomic", ".inter": "atomic"}
MAX_LINE_BYTES = 1 << 20  # one row (a JSONL or atomic line, a CSV record) may hold at most 1 MiB
MAX_JSON_DEPTH = 32  # objects/arrays nested deeper than this are refused before json.loads
BOM = b"\xef\xbb\xbf"
Row = dict[str, object]

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")  # strict UTF-8 has no surrogates: only escapes do
_BRACKETS = re.compile(rb"[\[\]{}]")


def detect_format(path: str | Path, fmt: str | None = None, default: str | None = None) -> str:
    """The reader to use for ``path``: ``fmt`` when given, else from the extension, else ``default``.

    Raises:
        ConfigError: unknown format, or an unknown extension and no ``default``.
    """
    if fmt:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown data format {fmt!r}", field="--format", fix=f"use one of {FORMATS}")
        return fmt
    suffixes = Path(path).suffixes
    ext = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes or [""])[-1]
    if ext.lower() in EXTENSIONS:
        return EXTENSIONS[ext.lower()]
    if default is not None:
        return detect_format(path, default)
    raise ConfigError(f"cannot tell the format of {path} from its extension {ext!r}", field="--format",
                      fix=f"pass --format, one of {FORMATS}")


def read_rows(path: str | Path, fmt: str | None = None,
              default: str | None = None) -> Iterator[tuple[int, Row | RowError]]:
    """Stream ``(line, row)``; an unreadable row comes as a RowError naming its line instead.

    Args:
        path: the data file.
        fmt: one of :data:`FORMATS`; None: from the extension (see :func:`detect_format`).
        default: the format of a file whose extension says nothing.

    Raises:
        ConfigError: the format cannot be told.
        CatalogError: the file cannot be opened or its header/footer is unreadable.
    """
    kind = detect_format(path, fmt, default)
    readers = {"jsonl": _read_jsonl, "csv": _read_delimited, "tsv": _read_tsv, "parquet": _read_parquet,
               "atomic": _read_atomic}
    try:
        yield from readers[kind](Path(path))
    except OSError as e:
        raise CatalogError(f"cannot read {path}: {e}", file=str(path), fix="check the path and permissions") from e


def count_rows(path: str | Path, fmt: str | None = None) -> int | None:
    """Cheap row count for progress bars (None when it would cost a full parse)."""
    kind = detect_format(path, fmt)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with open(path, "rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        return max(lines - (1 if kind in ("csv", "tsv", "atomic") else 0), 0)
    except OSError:
        return None


def _physical_lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None, int]]:
    """``(line number, bytes, size)`` per ``\\n``-line, BOM removed; bytes is None past MAX_LINE_BYTES
    (the rest of that line is skipped in chunks, never held in memory)."""
    line_no = 0
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line_no += 1
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(1 << 20)
                size += len(raw)
            yield line_no, None, size
            continue
        yield line_no, raw, len(raw)


def _decode(raw: bytes, line: int) -> str | RowError:
    """Strict UTF-8; a RowError naming the byte offset of the first invalid byte otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RowError(f"invalid UTF-8 at byte {e.start} of the line ({e.reason})", line=line,
                        fix="save the file as UTF-8")


def _too_long(line: int, size: int) -> RowError:
    return RowError(f"the row is {size} bytes, more than the limit of {MAX_LINE_BYTES}", line=line,
                    fix="shorten the row's values (long texts belong in a few kilobytes)")


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests objects/arrays deeper than ``limit`` (strings skipped)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def _read_jsonl(path: Path) -> Iterator[tuple[int, Row | RowError]]:
    with path.open("rb") as fh:
        for line_no, raw, size in _physical_lines(fh):
            if raw is None:
                yield line_no, _too_long(line_no, size)
                continue
            if not raw.strip():
                continue
            yield line_no, _parse_json_line(raw, line_no)


def _parse_json_line(raw: bytes, line_no: int) -> Row | RowError:
    text = _decode(raw, line_no)
    if isinstance(text, RowError):
        return text
    if json_depth_exceeds(raw):
        return RowError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", line=line_no,
                        fix="flatten the row: one JSON object of scalar values and lists")
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return RowError(f"invalid JSON: {e.msg} at column {e.colno}", line=line_no,
                        fix="write one JSON object per line")
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        return RowError(f"invalid JSON: {str(e).split(';')[0]}", line=line_no, fix="write one JSON object per line")
    if not isinstance(row, dict):
        return RowError(f"expected a JSON object, got {type(row).__name__}", line=line_no,
                        fix="write one JSON object per line")
    for column, value in row.items() if _SURROGATE_ESCAPE.search(raw) else ():
        if has_surrogate(column) or has_surrogate(value):
            return RowError(f"{column!r} holds a lone UTF-16 surrogate escape (such as \\ud800), which is "
                            "not text", line=line_no, field=column.encode("utf-8", "backslashreplace").decode(),
                            row=row, fix="write \\uD83D\\uDE00-style escapes only in pairs, or the characters")
    return row


def has_surrogate(value: object) -> bool:
    """Whether a string anywhere in ``value`` (lists, objects and their keys) holds a lone surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def _read_tsv(path: Path) -> Iterator[tuple[int, Row | RowError]]:
    return _read_delimited(path, "\t")


class _Lines:
    """Text lines for the csv module; remembers the first invalid UTF-8 byte and the size of each line."""

    def __init__(self, fh: BinaryIO):
        self._lines = _physical_lines(fh)
        self.bad: dict[int, RowError] = {}
        self.sizes: dict[int, int] = {}

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line_no, raw, size = next(self._lines)
        self.sizes[line_no] = size
        if raw is None:
            self.bad[line_no] = _too_long(line_no, size)
            return "\n"
        text = _decode(raw, line_no)
        if isinstance(text, RowError):
            self.bad[line_no] = text
            return raw.decode("utf-8", "replace")  # the row is refused; this only keeps csv in step
        return text

    def problem(self, first: int, last: int) -> RowError | None:
        """The first unreadable line among ``first..last`` (reported on ``first``), or an oversized row."""
        for line_no in range(first, last + 1):
            error = self.bad.pop(line_no, None)
            if error is not None:
                return RowError(str(error.args[0]), line=first, fix=error.fix) if line_no == first else \
                    RowError(f"line {line_no}: {error.args[0]}", line=first, fix=error.fix)
        size = sum(self.sizes.pop(n, 0) for n in range(first, last + 1))
        return _too_long(first, size) if size > MAX_LINE_BYTES else None


def _read_delimited(path: Path, delimiter: str | None = None) -> Iterator[tuple[int, Row | RowError]]:
    """CSV (or TSV) with a header; a ``.csv`` whose header has tabs and no commas is read as TSV."""
    with path.open("rb") as fh:
        lines = _Lines(fh)
        try:
            first = next(lines)
        except StopIteration:
            return
        if lines.bad:
            raise CatalogError(f"the header of {path} is unreadable: {lines.bad[1].args[0]}", file=str(path),
                               fix="save the file as UTF-8 with one header line")
        if delimiter is None:
            delimiter = "\t" if "\t" in first and "," not in first else ","
        fieldnames = next(csv.reader([first], delimiter=delimiter), [])
        reader = csv.reader(lines, delimiter=delimiter)
        line_no = 1
        while True:
            start = line_no + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line_no = reader.line_num + 1
                lines.problem(start, reader.line_num + 1)
                yield start, RowError(f"unreadable CSV row: {e}", line=start,
                                      fix="quote values that hold the delimiter, quotes or newlines")
                continue
            line_no = reader.line_num + 1
            problem = lines.problem(start, line_no)
            if problem is not None:
                yield start, problem
                continue
            if not values or all(v == "" for v in values):
                continue
            if len(values) > len(fieldnames):
                yield start, RowError(f"row has {len(values)} values, the header {len(fieldnames)}", line=start,
                                      fix="quote values with commas")
                continue
            yield start, dict(zip(fieldnames, values))


def _read_parquet(path: Path) -> Iterator[tuple[int, Row | RowError]]:
    import pyarrow.parquet as pq  # only needed for parquet files

    try:
        pfile = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends, not OSError
        raise CatalogError(f"cannot open parquet file {path}: {e}", file=str(path)) from e
    row_no = 0
    for batch in pfile.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def _read_atomic(path: Path) -> Iterator[tuple[int, Row | RowError]]:
    """recbole atomic files: tab-separated, header ``name:type``; ``token_seq`` splits on spaces."""
    with path.open("rb") as fh:
        lines = _physical_lines(fh)
        head = next(lines, None)
        if head is None:
            return
        header_text = _decode(head[1] or b"", 1)
        if isinstance(header_text, RowError):
            raise CatalogError(f"the header of {path} is unreadable: {header_text.args[0]}", file=str(path),
                               fix="save the file as UTF-8 with one header line")
        header = header_text.rstrip("\r\n").split("\t")
        columns = [h.split(":", 1)[0] for h in header]
        seq = {h.split(":", 1)[0] for h in header if h.endswith("_seq")}
        for line_no, raw, size in lines:
            if raw is None:
                yield line_no, _too_long(line_no, size)
                continue
            if not raw.strip():
                continue
            text = _decode(raw, line_no)
            if isinstance(text, RowError):
                yield line_no, text
                continue
            values = text.rstrip("\r\n").split("\t")
            if len(values) != len(columns):
                yield line_no, RowError(f"{len(values)} values for {len(columns)} columns", line=line_no)
                continue
            yield line_no, {c: (v.split() if c in seq else v) for c, v in zip(columns, values)}
