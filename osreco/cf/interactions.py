"""Read user-item interactions (CSV, TSV, JSONL, RecBole ``.inter``) with per-row validation.

Every data row ends in exactly one bucket: kept, a duplicate of an earlier event, an
unknown item (not in the item index; counted, not fatal), or rejected with a
:class:`RowError` naming its line and field. Whole-file problems (missing file, no rows,
no valid rows, nothing that references an indexed item) raise :class:`InteractionError`.

Example:
    >>> data = read_interactions("clicks.csv", ReadConfig(known_items=frozenset({"42"})))
    >>> data.report.kept, data.report.unknown_items
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy import sparse

from osreco.cf.errors import InteractionError
from osreco.ingest.errors import ConfigError, RowError
from osreco.ingest.rows import read_rows

USER_COLUMNS = ("user_id", "user", "userid", "user_key", "client_id")
ITEM_COLUMNS = ("item_id", "item", "itemid", "movie_id", "object_id")
VALUE_COLUMNS = ("value", "rating", "weight", "score", "count")
TIME_COLUMNS = ("timestamp", "ts", "time", "date")
MAX_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class Interaction:
    """One event: ``user_id`` did something worth ``value`` to ``item_id`` at ``timestamp`` (epoch s)."""

    user_id: str
    item_id: str
    value: float
    timestamp: float


@dataclass(frozen=True)
class ReadConfig:
    """How to read an interactions file.

    Args:
        known_items: ids present in the item index; others are counted as unknown.
            ``None`` accepts every item id.
        strict: raise the first :class:`RowError` instead of collecting it.
        default_value: value of rows without a value column (implicit feedback).
    """

    known_items: frozenset[str] | None = None
    strict: bool = False
    default_value: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.default_value):
            raise ConfigError("default_value must be a finite number", field="default_value")


@dataclass
class InteractionReport:
    """Counts for one read; ``rows == kept + duplicates + unknown_items + len(rejected)``."""

    source: str
    rows: int = 0
    kept: int = 0
    duplicates: int = 0
    unknown_items: int = 0
    unknown_item_examples: list[str] = field(default_factory=list)
    rejected: list[RowError] = field(default_factory=list)
    missing_timestamps: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (rejections as ``{line, field, error}``)."""
        return {"source": self.source, "rows": self.rows, "kept": self.kept,
                "duplicates": self.duplicates, "unknown_items": self.unknown_items,
                "unknown_item_examples": self.unknown_item_examples,
                "missing_timestamps": self.missing_timestamps,
                "rejected": [{"line": e.line, "field": e.field, "error": str(e)} for e in self.rejected]}


@dataclass
class InteractionSet:
    """The kept interactions (file order) and the report of the read."""

    interactions: list[Interaction]
    report: InteractionReport


def read_interactions(path: str | Path, config: ReadConfig = ReadConfig()) -> InteractionSet:
    """Read and validate an interactions file (format from the suffix).

    Args:
        path: ``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``/``.json`` (one object a line) or
            a RecBole ``.inter`` file (tab-separated, ``name:type`` headers).
        config: validation settings.

    Returns:
        The kept interactions and a report of every other row.

    Raises:
        InteractionError: missing or empty file, no valid rows, or no row that
            references an indexed item.
        RowError: a bad row when ``config.strict``.
    """
    path = Path(path)
    if not path.is_file():
        raise InteractionError(f"interactions file {path} does not exist", file=str(path),
                               fix="pass the path of a CSV/JSONL/.inter file")
    return collect_interactions(_rows(path), config, source=str(path))


def _rows(path: Path) -> Iterator[tuple[int, dict[str, object] | RowError]]:
    """The file's rows (:func:`osreco.ingest.rows.read_rows`; an unknown suffix is read as CSV/TSV),
    header names normalized (``User_ID:token`` -> ``user_id``)."""
    for line, row in read_rows(path, default="csv"):
        yield line, row if isinstance(row, RowError) else {str(k).split(":")[0].strip().lower(): v
                                                           for k, v in row.items()}


def collect_interactions(rows: Iterable[tuple[int, dict[str, object] | RowError]], config: ReadConfig,
                         source: str) -> InteractionSet:
    """Validate ``(line, row)`` pairs into an :class:`InteractionSet` (see :func:`read_interactions`).

    A row that could not be parsed comes as a :class:`RowError` and is rejected like an invalid one.
    """
    report = InteractionReport(source=source)
    kept: list[Interaction] = []
    seen: set[tuple[str, str, float]] = set()
    for line, row in rows:
        report.rows += 1
        try:
            if isinstance(row, RowError):
                raise row
            event = parse_row(row, line, config.default_value)
        except RowError as e:
            if config.strict:
                raise
            report.rejected.append(e)
            continue
        if event.timestamp == 0.0 and _pick(row, TIME_COLUMNS) in (None, ""):
            report.missing_timestamps += 1
        identity = (event.user_id, event.item_id, event.timestamp)
        if identity in seen:
            report.duplicates += 1
            continue
        seen.add(identity)
        if config.known_items is not None and event.item_id not in config.known_items:
            report.unknown_items += 1
            if len(report.unknown_item_examples) < MAX_EXAMPLES and event.item_id not in report.unknown_item_examples:
                report.unknown_item_examples.append(event.item_id)
            continue
        kept.append(event)
    report.kept = len(kept)
    _check_usable(report)
    return InteractionSet(kept, report)


def _check_usable(report: InteractionReport) -> None:
    """Raise for whole-file problems; a few bad rows alone are not fatal."""
    if report.rows == 0:
        raise InteractionError(f"{report.source} holds no interactions", file=report.source,
                               fix="give a file with a header and one row per event (user_id,item_id,value,timestamp)")
    if report.kept:
        return
    if report.rejected and not report.unknown_items:
        first = "; ".join(str(e) for e in report.rejected[:3])
        raise InteractionError(f"{report.source}: none of {report.rows} rows is valid (first: {first})",
                               file=report.source, fix="fix the rows named above")
    raise InteractionError(
        f"{report.source}: none of the interactions references an indexed item "
        f"({report.unknown_items} unknown, e.g. {', '.join(report.unknown_item_examples[:5])})",
        file=report.source, fix="check --index (the item index the interactions belong to) and the item id column")


def parse_row(row: dict[str, object], line: int, default_value: float = 1.0) -> Interaction:
    """One raw row (column name -> value) as an :class:`Interaction`.

    Raises:
        RowError: missing user or item id, non-numeric or non-finite value, bad timestamp.
    """
    user = _pick(row, USER_COLUMNS)
    item = _pick(row, ITEM_COLUMNS)
    if user in (None, ""):
        raise RowError(f"line {line}: missing user id", line=line, field="user_id")
    if item in (None, ""):
        raise RowError(f"line {line}: missing item id", line=line, field="item_id")
    raw_value = _pick(row, VALUE_COLUMNS)
    value = default_value if raw_value in (None, "") else _number(raw_value, line, "value")
    raw_time = _pick(row, TIME_COLUMNS)
    timestamp = 0.0 if raw_time in (None, "") else _timestamp(raw_time, line)
    return Interaction(str(user).strip(), str(item).strip(), value, timestamp)


def _pick(row: dict[str, object], names: tuple[str, ...]) -> object:
    for name in names:
        if name in row:
            return row[name]
    return None


def _number(raw: object, line: int, name: str) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]  # any cell value: TypeError is caught
    except (TypeError, ValueError) as e:
        raise RowError(f"line {line}: {name} {raw!r} is not a number", line=line, field=name,
                       fix=f"make {name} numeric (e.g. 1 for a click, 1-5 for a rating)") from e
    if not math.isfinite(value) or isinstance(raw, bool):
        raise RowError(f"line {line}: {name} {raw!r} is not a finite number", line=line, field=name)
    return value


def _timestamp(raw: object, line: int) -> float:
    """Epoch seconds from a number or an ISO 8601 string (``Z`` allowed)."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return _number(raw, line, "timestamp")
    text = str(raw).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise RowError(f"line {line}: timestamp {text!r} is neither epoch seconds nor ISO 8601",
                       line=line, field="timestamp", fix="use epoch seconds or e.g. 2024-05-01T12:00:00Z") from e
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass(frozen=True)
class InteractionMatrix:
    """Users x items matrix of summed values, with the id maps of its rows and columns."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    matrix: sparse.csr_matrix
    last_seen: np.ndarray  # per item, newest timestamp (epoch s); 0 when unseen

    def user_index(self) -> dict[str, int]:
        """Map user id -> row."""
        return {u: i for i, u in enumerate(self.user_ids.tolist())}

    def item_index(self) -> dict[str, int]:
        """Map item id -> column."""
        return {it: i for i, it in enumerate(self.item_ids.tolist())}


def build_matrix(interactions: list[Interaction], item_ids: Iterable[str] | None = None,
                 user_ids: Iterable[str] | None = None) -> InteractionMatrix:
    """Sum values of each (user, item) into a CSR matrix.

    Args:
        interactions: events (any order).
        item_ids: column order; default the sorted ids seen. Events of other items are dropped.
        user_ids: row order; default the sorted ids seen. Events of other users are dropped.

    Returns:
        The matrix (float32) and its id maps.
    """
    items = np.array(sorted({e.item_id for e in interactions}) if item_ids is None else list(item_ids), dtype=object)
    users = np.array(sorted({e.user_id for e in interactions}) if user_ids is None else list(user_ids), dtype=object)
    item_pos = {it: i for i, it in enumerate(items.tolist())}
    user_pos = {u: i for i, u in enumerate(users.tolist())}
    rows, cols, vals = [], [], []
    last_seen = np.zeros(len(items), dtype=np.float64)
    for e in interactions:
        r, c = user_pos.get(e.user_id), item_pos.get(e.item_id)
        if r is None or c is None:
            continue
        rows.append(r)
        cols.append(c)
        vals.append(e.value)
        last_seen[c] = max(last_seen[c], e.timestamp)
    matrix = sparse.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                               shape=(len(users), len(items)), dtype=np.float32)
    matrix.sum_duplicates()
    return InteractionMatrix(users, items, matrix, last_seen)
