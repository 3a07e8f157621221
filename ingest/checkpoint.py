"""Resume points and dead letters of the bulk writer (both written only after a confirmed batch).

A checkpoint records how many catalog rows are settled, the running counts and the size of
the dead-letter file at that moment. A resumed run skips the settled rows and truncates the
dead-letter file back to that size, so no dead letter is written twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from osreco.ingest.errors import ConfigError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def catalog_fingerprint(path: str | Path) -> str:
    """Identity of a catalog file for checkpoint keys: absolute path, size and mtime."""
    st = os.stat(path)
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"


@dataclass
class Checkpoint:
    """The resume point of one (catalog, index, model) load; a no-op when ``path`` is None."""

    path: Path | None
    key: Mapping[str, object]
    rows_done: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dead_letter_offset: int | None = None

    @classmethod
    def open(cls, path: Path | None, key: Mapping[str, object]) -> Checkpoint:
        """Load ``path`` when it belongs to the same ``key``; otherwise start from row 0.

        Raises:
            ConfigError: the file exists but is not a checkpoint.
        """
        if path is None or not Path(path).exists():
            return cls(path, dict(key))
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            saved_key, rows = data["key"], int(data["rows_done"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"checkpoint {path} is unreadable: {e}", field="--checkpoint",
                              fix="delete it to start over (items are idempotent by _id)") from e
        if saved_key != dict(key):
            log.warning("checkpoint %s is for %s, not %s: starting from the first row", path, saved_key, dict(key))
            return cls(path, dict(key))
        return cls(path, dict(key), rows, dict(data.get("counts", {})), data.get("dead_letter_offset"))

    def save(self, rows_done: int, counts: Mapping[str, int], dead_letter_offset: int) -> None:
        """Atomically replace the checkpoint file (write, fsync, rename)."""
        self.rows_done, self.counts, self.dead_letter_offset = rows_done, dict(counts), dead_letter_offset
        if self.path is None:
            return
        tmp = Path(f"{self.path}.tmp")
        payload = {"format_version": FORMAT_VERSION, "key": dict(self.key), "rows_done": rows_done,
                   "counts": dict(counts), "dead_letter_offset": dead_letter_offset}
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def finish(self) -> None:
        """The load completed: remove the file so the next run starts from the first row."""
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)


class DeadLetters:
    """Append-only JSONL of refused rows; each record names line, item id, field and reason."""

    def __init__(self, path: Path | None, source: str, truncate_to: int | None = None):
        """Resuming (``truncate_to`` set): cut ``path`` back to that size; else start it empty.

        The file is created on the first dead letter, so a clean run leaves none behind.
        """
        self.path, self.source = path, source
        self._fh: IO[str] | None = None
        self._size = 0
        if path is None:
            return
        if truncate_to is not None and Path(path).exists():
            with open(path, "r+", encoding="utf-8") as fh:
                fh.truncate(truncate_to)
            self._size = truncate_to
        else:
            Path(path).unlink(missing_ok=True)

    def write(self, records: Iterable[Mapping[str, object]]) -> None:
        """Append records and fsync them (they must be durable before the checkpoint)."""
        lines = [_record_line(dict(r, source=self.source)) for r in records]
        if self.path is None or not lines:
            return
        if self._fh is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.writelines(lines)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._size = self._fh.tell()

    def offset(self) -> int:
        """Current size in bytes (0 without a file)."""
        return self._size

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _record_line(record: Mapping[str, object]) -> str:
    """One JSONL line; a record that quotes a lone surrogate is written ASCII-escaped (still valid JSON)."""
    line = json.dumps(record, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True, default=str)
    return line + "\n"
