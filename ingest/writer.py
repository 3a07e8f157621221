"""The bulk writer: catalog entries in, one OpenSearch document per item out, nothing lost.

Pipelined: the caller's thread validates, looks up content hashes and embeds batch N+1
while one writer thread serializes and sends batch N. Every row ends in exactly one bucket
(indexed, unchanged, deleted, dead-lettered). Retries follow the policy of
:mod:`osreco.ingest.bulk` (exponential backoff with jitter on 429, 502/503/504, timeouts,
dropped connections and the k-NN circuit breaker); mapping errors are dead-lettered. A
checkpoint is written after each fully checked bulk response, so a killed run resumes after
the last confirmed batch.

Example:
    >>> report = index_items(client, encoder, "products-v1", read_catalog(path, fields),
    ...                      WriteConfig(dead_letter=Path("dead.jsonl")))
    >>> report.rows_read == report.indexed + report.unchanged + report.deleted + report.dead_lettered
    True
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
from opensearchpy import OpenSearch

from osreco.ingest.bulk import RetryPolicy, bulk_body, retry_call, send_bulk
from osreco.ingest.catalog import CatalogEntry, CatalogItem
from osreco.ingest.checkpoint import Checkpoint, DeadLetters
from osreco.ingest.encoders import content_id, encode_fields, fields_of
from osreco.ingest.errors import BulkError, ConfigError, RowError

_Action = tuple[dict[str, object], dict[str, object] | None, CatalogItem]


class EncoderLike(Protocol):
    """What the writer needs from ``osreco.exporter.Encoder``."""

    @property
    def dim(self) -> int: ...

    @property
    def artifact_id(self) -> str: ...

    def encode_items(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass(frozen=True)
class WriteConfig:
    """How the writer batches, retries, checkpoints and reports.

    Args:
        batch_size: items per bulk request.
        embed_batch_size: items per encoder call inside ``encode_items``.
        max_retries, backoff_base_s, backoff_max_s, request_timeout_s: the retry policy, as in
            :class:`~osreco.ingest.bulk.RetryPolicy` (same defaults); after the retries a BulkError.
        dead_letter: JSONL file for rows that failed validation or were refused.
        checkpoint: JSON file written after each confirmed batch (resume point).
        sync: delete indexed items that the catalog no longer has.
        skip_unchanged: look up content hashes and skip unchanged items.
        reuse_from: another index (the previous version) whose vectors are reused when the
            content hash matches (a rebuild with the same model re-embeds nothing).
        depth: batches in flight between embedding and writing (0: no overlap, write inline).
        refresh: refresh the index at the end so the result is searchable at once.
    """

    batch_size: int = 256
    embed_batch_size: int = 64
    max_retries: int = RetryPolicy.max_retries
    backoff_base_s: float = RetryPolicy.backoff_base_s
    backoff_max_s: float = RetryPolicy.backoff_max_s
    request_timeout_s: float = RetryPolicy.request_timeout_s
    dead_letter: Path | None = None
    checkpoint: Path | None = None
    sync: bool = False
    skip_unchanged: bool = True
    reuse_from: str | None = None
    depth: int = 2
    refresh: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "embed_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"WriteConfig.{name} must be >= 1", field=name)
        if self.depth < 0:
            raise ConfigError("WriteConfig.depth must be >= 0", field="depth")
        RetryPolicy(self.max_retries, self.backoff_base_s, self.backoff_max_s)  # raises on bad retry settings


@dataclass
class IngestReport:
    """Counts of one run; ``rows_read`` = indexed + unchanged + deleted + dead_lettered."""

    index: str
    rows_read: int = 0
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    dead_lettered: int = 0
    deleted_missing: int = 0
    embedded: int = 0
    reused_vectors: int = 0
    retries: int = 0
    resumed_rows: int = 0
    elapsed_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_retry(self) -> None:
        """Count one retry (both the embedding and the writing thread retry)."""
        with self._lock:
            self.retries += 1

    @property
    def ok(self) -> bool:
        """True when no row was dead-lettered."""
        return self.dead_lettered == 0

    def counts(self) -> dict[str, int]:
        """The counters that a checkpoint carries over to a resumed run."""
        return {k: getattr(self, k) for k in ("rows_read", "indexed", "unchanged", "deleted", "dead_lettered",
                                              "embedded", "reused_vectors", "retries")}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready report (what ``--json`` prints)."""
        out: dict[str, object] = dict(self.counts(), index=self.index, deleted_missing=self.deleted_missing,
                                      resumed_rows=self.resumed_rows, elapsed_s=round(self.elapsed_s, 3),
                                      ok=self.ok)
        out["items_per_s"] = round((self.rows_read - self.resumed_rows) / self.elapsed_s, 1) if self.elapsed_s else 0.0
        return out


@dataclass
class _Batch:
    """One prepared batch: bulk actions plus the rows already settled without a write."""

    last_row: int
    actions: list[_Action] = field(default_factory=list)
    dead: list[dict[str, object]] = field(default_factory=list)
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0


def index_items(client: OpenSearch, encoder: EncoderLike, index: str, entries: Iterable[CatalogEntry],
                config: WriteConfig, source: str = "", progress: Callable[[int], None] | None = None,
                *, fingerprint: str = "", report: IngestReport | None = None) -> IngestReport:
    """Write catalog entries to ``index`` (a concrete index or an alias with one write index).

    Args:
        client: opensearch-py client (its own retries are not relied on).
        encoder: anything with ``encode_items`` and ``artifact_id`` (the exporter's Encoder).
        index: where to write.
        entries: validated items and row errors, in catalog order (``read_catalog``).
        config: batching, retry, checkpoint and dead-letter settings.
        source: the catalog's name (path) for the dead letters.
        progress: called with the number of rows handled after each batch.
        fingerprint: the catalog's identity for the checkpoint key (``catalog_fingerprint``).
        report: the report to fill; a caller that passes one keeps the counts of the confirmed
            batches when the load raises.

    Returns:
        The report; its counts sum to the rows read.

    Raises:
        BulkError: OpenSearch stayed unreachable or refused writes after all retries.
    """
    started = time.perf_counter()
    report = report if report is not None else IngestReport(index=index)
    report.index = index
    checkpoint = Checkpoint.open(config.checkpoint, {"source": fingerprint or source, "index": index,
                                                     "artifact_id": content_id(encoder)})
    if checkpoint.rows_done:
        for key, value in checkpoint.counts.items():
            setattr(report, key, value)
        report.resumed_rows = checkpoint.rows_done
    dead_letters = DeadLetters(config.dead_letter, source, truncate_to=checkpoint.dead_letter_offset)
    seen: dict[str, int] = {}
    in_flight: deque[Future[None]] = deque()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="osreco-bulk") as pool:
            settled = _skip_settled(entries, checkpoint.rows_done, seen, progress)
            for rows, chunk in _chunks(settled, config.batch_size, start=checkpoint.rows_done):
                batch = _prepare(client, encoder, index, chunk, rows, seen, config, report)
                if config.depth == 0:
                    _write(client, index, batch, config, report, dead_letters, checkpoint)
                    if progress:
                        progress(len(chunk))
                    continue
                while len(in_flight) >= config.depth:
                    in_flight.popleft().result()
                in_flight.append(pool.submit(_write, client, index, batch, config, report, dead_letters, checkpoint))
                if progress:
                    progress(len(chunk))
            while in_flight:
                in_flight.popleft().result()
        if config.sync:
            report.deleted_missing = _delete_missing(client, index, seen, config, report)
        if config.refresh:
            retry_call(lambda: client.indices.refresh(index=index), config, f"refresh {index}", report.add_retry)
    finally:
        for future in in_flight:
            future.cancel()
        dead_letters.close()
        report.elapsed_s = time.perf_counter() - started
    checkpoint.finish()
    return report


def _skip_settled(entries: Iterable[CatalogEntry], rows_done: int, seen: dict[str, int],
                  progress: Callable[[int], None] | None) -> Iterator[CatalogEntry]:
    """Pass over the rows a checkpoint already settled (remembering their ids), yield the rest."""
    for position, entry in enumerate(entries, start=1):
        if position > rows_done:
            yield entry
            continue
        if isinstance(entry, CatalogItem):
            seen.setdefault(entry.item_id, entry.line)
        elif entry.context.get("item_id"):
            seen.setdefault(str(entry.context["item_id"]), entry.line)
        if progress and (position % 1000 == 0 or position == rows_done):
            progress(1000 if position % 1000 == 0 else position % 1000)


def _chunks(entries: Iterable[CatalogEntry], size: int, start: int = 0) -> Iterator[tuple[int, list[CatalogEntry]]]:
    """Yield ``(rows read so far, chunk)``, counting from ``start`` already-settled rows."""
    chunk: list[CatalogEntry] = []
    rows = start
    for entry in entries:
        chunk.append(entry)
        rows += 1
        if len(chunk) == size:
            yield rows, chunk
            chunk = []
    if chunk:
        yield rows, chunk


def _prepare(client: OpenSearch, encoder: EncoderLike, index: str, chunk: list[CatalogEntry], rows: int,
             seen: dict[str, int], config: WriteConfig, report: IngestReport) -> _Batch:
    """Validate duplicates, skip unchanged items, embed the rest and build the bulk actions."""
    batch = _Batch(last_row=rows)
    live: list[tuple[CatalogItem, str]] = []
    for entry in chunk:
        if isinstance(entry, RowError):
            batch.dead.append(_dead_row(entry))
            if entry.context.get("item_id"):  # a bad row still names a live item: --sync must keep it
                seen.setdefault(str(entry.context["item_id"]), entry.line)
        elif entry.item_id in seen:
            batch.dead.append({"line": entry.line, "item_id": entry.item_id, "field": "item_id", "stage": "validate",
                               "reason": f"duplicate item id, first seen on line {seen[entry.item_id]}"})
        else:
            seen[entry.item_id] = entry.line
            if entry.deleted:
                batch.actions.append(({"delete": {"_index": index, "_id": entry.item_id}}, None, entry))
            else:
                live.append((entry, entry.content_hash(content_id(encoder))))
    fields = fields_of(encoder)
    existing = _lookup(client, index, [item.item_id for item, _ in live], config, report, with_vectors=())
    previous = (_lookup(client, config.reuse_from, [item.item_id for item, _ in live], config, report,
                        with_vectors=fields) if config.reuse_from else {})
    todo: list[tuple[CatalogItem, str, dict[str, object]]] = []
    for item, digest in live:
        old = existing.get(item.item_id, {})
        if config.skip_unchanged and old.get("content_hash") == digest:
            batch.unchanged += 1
            continue
        todo.append((item, digest, previous.get(item.item_id) or old))
    reuse = [(i, d, o) for i, d, o in todo if o.get("content_hash") == d and all(o.get(f) for f in fields)]
    fresh = [(i, d, o) for i, d, o in todo if not (o.get("content_hash") == d and all(o.get(f) for f in fields))]
    vectors = (encode_fields(encoder, [i.embed_text for i, _, _ in fresh], config.embed_batch_size)
               if fresh else {})
    now = datetime.now(timezone.utc).isoformat()
    for row, (item, digest, old) in enumerate(fresh):
        batch.actions.append(_index_action(index, item, digest, now,
                                           {f: v[row].tolist() for f, v in vectors.items()}, old))
    for item, digest, old in reuse:
        batch.actions.append(_index_action(index, item, digest, now, {f: old[f] for f in fields}, old))
    batch.embedded, batch.reused = len(fresh), len(reuse)
    return batch


def _index_action(index: str, item: CatalogItem, digest: str, now: str, vectors: dict[str, object],
                  old: dict[str, object]) -> tuple[dict[str, object], dict[str, object], CatalogItem]:
    doc = dict(item.fields, **vectors, content_hash=digest, indexed_at=now)
    if old.get("cf_vector") is not None:  # collaborative factors are written separately: keep them
        doc["cf_vector"] = old["cf_vector"]
    return {"index": {"_index": index, "_id": item.item_id}}, doc, item


def _lookup(client: OpenSearch, index: str | None, ids: list[str], config: WriteConfig, report: IngestReport,
            with_vectors: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """``_id -> _source`` (content_hash, cf_vector and the vector fields ``with_vectors``) of the existing docs."""
    if not ids or not index or not (config.skip_unchanged or with_vectors):
        return {}
    fields = ["content_hash", "cf_vector", *with_vectors]
    resp = retry_call(lambda: client.mget(index=index, body={"ids": ids}, params={"_source_includes": ",".join(fields)},
                                          request_timeout=config.request_timeout_s),
                      config, f"look up {len(ids)} items in {index}", report.add_retry)
    return {d["_id"]: d.get("_source", {}) for d in resp["docs"] if d.get("found")}


def _write(client: OpenSearch, index: str, batch: _Batch, config: WriteConfig, report: IngestReport,
           dead_letters: DeadLetters, checkpoint: Checkpoint) -> None:
    """Send one batch (retrying what is retryable), settle every row, then checkpoint."""
    refused = _send_bulk(client, batch.actions, config, report)
    refused_ops = Counter(r["op"] for r in refused)
    n_index = sum(1 for action, _, _ in batch.actions if "index" in action)
    report.indexed += n_index - refused_ops["index"]
    report.deleted += len(batch.actions) - n_index - refused_ops["delete"]
    dead = batch.dead + refused
    report.unchanged += batch.unchanged
    report.embedded += batch.embedded
    report.reused_vectors += batch.reused
    report.dead_lettered += len(dead)
    report.rows_read = batch.last_row
    dead_letters.write(dead)
    checkpoint.save(batch.last_row, report.counts(), dead_letters.offset())


def _send_bulk(client: OpenSearch, actions: list[_Action], config: WriteConfig,
               report: IngestReport) -> list[dict[str, object]]:
    """Bulk-write ``actions`` until each one succeeded or was refused for good; returns the refused.

    Raises:
        BulkError: items still refused for a retryable reason after ``config.max_retries`` retries.
    """
    refused, pending = send_bulk(client, actions, _ndjson, config, report.add_retry)
    if pending:
        first = pending[0][0][2]
        raise BulkError(f"{len(pending)} items still refused after {config.max_retries} retries, first "
                        f"{first.item_id!r} (line {first.line})", item_id=first.item_id,
                        fix="the cluster is overloaded (429) or out of k-NN memory: add capacity, lower "
                            "--batch-size, then rerun to resume")
    return [_dead_item(action[2], op, status, error) for action, op, status, error in refused]


def _ndjson(actions: Sequence[_Action]) -> str:
    return bulk_body((action, doc) for action, doc, _ in actions)


def _dead_row(error: RowError) -> dict[str, object]:
    return {"line": error.line, "item_id": error.context.get("item_id"), "field": error.field, "stage": "validate",
            "reason": str(error.args[0]) if error.args else str(error), "fix": error.fix}


def _dead_item(item: CatalogItem, op: str, status: int, error: object) -> dict[str, object]:
    reason = error.get("reason") if isinstance(error, dict) else str(error)
    kind = error.get("type") if isinstance(error, dict) else None
    return {"line": item.line, "item_id": item.item_id, "field": None, "stage": "index", "op": op,
            "status": status, "error_type": kind, "reason": reason,
            "fix": "fix the value so that it matches the index mapping, then rerun"}


def _delete_missing(client: OpenSearch, index: str, seen: dict[str, int], config: WriteConfig,
                    report: IngestReport) -> int:
    """Delete documents whose ids the catalog no longer has (``--sync``); returns how many."""
    from opensearchpy.helpers import scan

    retry_call(lambda: client.indices.refresh(index=index), config, f"refresh {index}", report.add_retry)
    stale = [hit["_id"] for hit in scan(client, index=index, query={"_source": False}, size=1000)
             if hit["_id"] not in seen]
    for start in range(0, len(stale), config.batch_size):
        body = "".join(json.dumps({"delete": {"_index": index, "_id": i}}) + "\n"
                       for i in stale[start:start + config.batch_size])
        resp = retry_call(partial(client.bulk, body=body, request_timeout=config.request_timeout_s), config,
                          "delete missing items", report.add_retry)
        bad = [r["delete"] for r in resp["items"] if r["delete"]["status"] not in (200, 404)]
        if bad:
            raise BulkError(f"could not delete {len(bad)} missing items, first {bad[0]['_id']!r}: "
                            f"{bad[0].get('error')}", item_id=bad[0]["_id"])
    return len(stale)
