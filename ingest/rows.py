"""The one reader of data rows: JSONL, CSV, TSV, Parquet and recbole atomic files.

Every reader of a data file (catalogs, interactions, training events, golden cases) gets
its rows from :func:`read_rows` as ``(line, row)`` pairs: ``row`` is a dict (column -> value)
or, for a row that cannot be parsed, one :class:`RowError` naming the line. What a row
means (an item, an event) is left to the caller.

Lines are 1-based physical lines for JSONL, CSV/TSV (the header is line 1) and atomic
files, and 1-based row numbers for Parquet. Blank lines are skipped.

Example:
    >>> for line, row in read_rows("clicks.csv"):
    ...     print(line, row)
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from osreco.ingest.errors import CatalogError, ConfigError, RowError

FORMATS = ("jsonl", "csv", "tsv", "parquet", "atomic")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
              ".parquet": "parquet", ".pq": "parquet", ".item": "atomic", ".inter": "atomic"}
Row = dict[str, object]


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
    """Stream ``(line, row)``; an unparsable row comes as a RowError naming its line instead.

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


def _read_jsonl(path: Path) -> Iterator[tuple[int, Row | RowError]]:
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, RowError(f"invalid JSON: {e.msg} at column {e.colno}", line=line_no,
                                        fix="write one JSON object per line")
                continue
            if not isinstance(row, dict):
                yield line_no, RowError(f"expected a JSON object, got {type(row).__name__}", line=line_no,
                                        fix="write one JSON object per line")
                continue
            yield line_no, row


def _read_tsv(path: Path) -> Iterator[tuple[int, Row | RowError]]:
    return _read_delimited(path, "\t")


def _read_delimited(path: Path, delimiter: str | None = None) -> Iterator[tuple[int, Row | RowError]]:
    """CSV (or TSV) with a header; a ``.csv`` whose header has tabs and no commas is read as TSV."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as fh:  # -sig: spreadsheets' BOM
        first = fh.readline()
        if delimiter is None:
            delimiter = "\t" if "\t" in first and "," not in first else ","
        reader = csv.DictReader(itertools.chain([first], fh), delimiter=delimiter)
        line_no = 1
        for row in reader:
            start, line_no = line_no + 1, reader.line_num
            if None in row:
                yield start, RowError(f"row has {len(row) - 1 + len(row[None])} values, the header "
                                      f"{len(reader.fieldnames or [])}", line=start, fix="quote values with commas")
                continue
            if all(v in ("", None) for v in row.values()):
                continue
            yield start, {k: v for k, v in row.items() if v is not None}


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
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        columns = [h.split(":", 1)[0] for h in header]
        seq = {h.split(":", 1)[0] for h in header if h.endswith("_seq")}
        for line_no, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            values = line.rstrip("\r\n").split("\t")
            if len(values) != len(columns):
                yield line_no, RowError(f"{len(values)} values for {len(columns)} columns", line=line_no)
                continue
            yield line_no, {c: (v.split() if c in seq else v) for c, v in zip(columns, values)}
