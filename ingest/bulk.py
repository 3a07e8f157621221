"""The writer's retry policy and the one bulk-write path every part uses.

Retries use exponential backoff with jitter on 429, 502/503/504, timeouts, dropped
connections and the k-NN circuit breaker (a 400). A whole request is retried by
:func:`retry_call`; items a bulk response refuses for a retryable reason are re-sent by
:func:`send_bulk`. :func:`bulk_write` is the entry point for bulk writes outside the
catalog writer (collaborative factors, events, evaluation set-up): opensearch-py style
action dicts in, a :class:`BulkReport` with every action in exactly one bucket out.

Example:
    >>> report = bulk_write(client, [{"_op_type": "update", "_index": "movies", "_id": "1",
    ...                               "doc": {"popularity": 3.0}}])
    >>> report.written, report.missing, report.failed
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from osreco.ingest.errors import BulkError, ConfigError

__all__ = ["RETRY_STATUS", "RetryPolicy", "BulkReport", "retry_call", "backoff_delay", "is_retryable_item",
           "send_bulk", "bulk_write"]

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({429, 502, 503, 504})
T = TypeVar("T")


class RetrySettings(Protocol):
    """What a retry needs: :class:`RetryPolicy` and the writer's ``WriteConfig`` both have it."""

    @property
    def max_retries(self) -> int: ...

    @property
    def backoff_base_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...

    @property
    def request_timeout_s(self) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How bulk writes retry.

    Args:
        max_retries: attempts after the first one before giving up.
        backoff_base_s, backoff_max_s: exponential backoff (full jitter between 50 and 100 %).
        request_timeout_s: timeout of each bulk request.
    """

    max_retries: int = 10
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    request_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("retries must be >= 0 and 0 <= backoff_base_s <= backoff_max_s", field="max_retries")


@dataclass
class BulkReport:
    """Outcome of :func:`bulk_write`: every action is written, missing or failed.

    ``missing`` holds the ids a 404 answered (an update of a document the index does not
    hold); ``failed`` maps an id (``#<position>`` for actions without one) to the reason;
    ``retryable`` holds the failed ids whose last refusal was retryable (429, 5xx, the k-NN
    breaker), so a caller without retries can tell "busy, retry" from "refused".
    """

    written: int = 0
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retries: int = 0
    retryable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (the first ten missing ids and failures)."""
        return {"written": self.written, "missing": len(self.missing), "missing_examples": self.missing[:10],
                "failed": len(self.failed), "failed_examples": dict(list(self.failed.items())[:10])}


def retry_call(fn: Callable[[], T], config: RetrySettings, what: str,
               on_retry: Callable[[], None] | None = None) -> T:
    """Call ``fn``; on a dropped connection, timeout, 429 or 502/503/504, back off and retry.

    Args:
        fn: the request.
        config: the retry settings.
        what: the request in words (for logs and the error).
        on_retry: called once per retry (e.g. a report's ``add_retry``).

    Raises:
        BulkError: still failing after ``config.max_retries`` retries.
        TransportError, ConnectionError: a non-retryable error of the request, or any error when
            ``config.max_retries`` is 0 (a caller that must answer fast, such as a sidecar request,
            maps the node's own error itself).
    """
    for attempt in range(config.max_retries + 1):
        try:
            return fn()
        except (OSConnectionError, TransportError) as e:
            status = e.status_code if isinstance(e, TransportError) else None
            if config.max_retries == 0 or (not isinstance(e, OSConnectionError) and status not in RETRY_STATUS):
                raise
            if attempt == config.max_retries:
                raise BulkError(f"{what} failed after {attempt + 1} attempts: {e}", status=status,
                                fix="check that OpenSearch is reachable and healthy, then rerun "
                                    "(the checkpoint resumes the load)") from e
            if on_retry is not None:
                on_retry()
            delay = backoff_delay(attempt, config)
            log.warning("%s: %s; retrying in %.1fs (attempt %d)", what, e, delay, attempt + 1)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def backoff_delay(attempt: int, config: RetrySettings, rng: random.Random | None = None) -> float:
    """Exponential backoff capped at ``backoff_max_s``, scaled by a jitter in [0.5, 1)."""
    raw = min(config.backoff_max_s, config.backoff_base_s * (2 ** attempt))
    return raw * (0.5 + (rng or random).random() / 2)


def is_retryable_item(status: int, error: object) -> bool:
    """True for item failures worth retrying: 429, 502/503/504 and the k-NN circuit breaker."""
    if status in RETRY_STATUS:
        return True
    text = json.dumps(error).lower() if error is not None else ""
    return status == 400 and ("circuit_breaking" in text or "circuit breaker" in text)


def send_bulk(client: OpenSearch, pending: Sequence[T], ndjson: Callable[[Sequence[T]], str],
              config: RetrySettings, on_retry: Callable[[], None], *, refresh: bool | str = False,
              ) -> tuple[list[tuple[T, str, int, object]], list[tuple[T, str, int, object]]]:
    """Bulk-write ``pending`` until each action succeeded, was refused for good, or retries ran out.

    Args:
        pending: the actions, in any caller-defined shape.
        ndjson: the bulk request body of a list of actions.
        config: the retry settings.
        on_retry: called once per retry (whole request or refused items).
        refresh: the bulk request's ``refresh`` parameter.

    Returns:
        ``(refused, still_retryable)``: each a list of ``(action, op, status, error)``;
        a 404 of a delete counts as done.
    """
    refused: list[tuple[T, str, int, object]] = []
    last: list[tuple[T, str, int, object]] = []
    params = {"refresh": refresh} if refresh else {}
    for attempt in range(config.max_retries + 1):
        if not pending:
            return refused, []
        body = ndjson(pending)
        resp = retry_call(partial(client.bulk, body=body, request_timeout=config.request_timeout_s, **params),
                          config, f"bulk of {len(pending)} items", on_retry)
        last = []
        for action, result in zip(pending, resp["items"]):
            op, res = next(iter(result.items()))
            status, error = int(res.get("status", 500)), res.get("error")
            if status < 300 or (op == "delete" and status == 404):
                continue
            if is_retryable_item(status, error):
                last.append((action, op, status, error))
            else:
                refused.append((action, op, status, error))
        pending = [a for a, _, _, _ in last]
        if pending and attempt < config.max_retries:
            on_retry()
            time.sleep(backoff_delay(attempt, config))
    return refused, last


def bulk_write(client: OpenSearch, actions: Iterable[Mapping[str, object]], policy: RetrySettings = RetryPolicy(),
               *, chunk_size: int = 500, refresh: bool | str = False,
               progress: Callable[[int], None] | None = None) -> BulkReport:
    """Write opensearch-py style actions (``_op_type``, ``_index``, ``_id``, ``_source`` or ``doc``).

    Sent ``chunk_size`` at a time with the writer's retry policy: whole requests and
    retryable items (429, 5xx, the k-NN breaker) are retried with backoff; an item still
    refused after ``policy.max_retries`` retries is counted as failed.

    Args:
        client: opensearch-py client.
        actions: ``index``/``create`` (``_source``), ``update`` (``doc``) or ``delete`` actions.
        policy: retries and timeouts.
        chunk_size: actions per bulk request.
        refresh: the requests' ``refresh`` parameter (False, True or ``"wait_for"``).
        progress: called with the number of actions settled after each request.

    Returns:
        The report: ``written + len(missing) + len(failed)`` = actions.

    Raises:
        BulkError: a request failed for good (node unreachable, or a non-retryable error).
    """
    if chunk_size < 1:
        raise ConfigError("chunk_size must be >= 1", field="chunk_size")
    report = BulkReport()

    def count_retry() -> None:
        report.retries += 1

    chunk: list[tuple[str, dict[str, object], dict[str, object] | None]] = []
    position = 0
    for action in actions:
        position += 1
        chunk.append(_pair(action, position))
        if len(chunk) == chunk_size:
            _write_chunk(client, chunk, policy, refresh, report, count_retry, progress)
            chunk = []
    if chunk:
        _write_chunk(client, chunk, policy, refresh, report, count_retry, progress)
    return report


def _pair(action: Mapping[str, object], position: int) -> tuple[str, dict[str, object], dict[str, object] | None]:
    """``(key, action line, source line)`` of one helper-style action."""
    op = str(action.get("_op_type", "index"))
    meta = {k: v for k, v in action.items() if k in ("_index", "_id", "_routing")}
    key = str(action["_id"]) if action.get("_id") is not None else f"#{position}"
    if op == "delete":
        return key, {op: meta}, None
    if op == "update":
        doc = {k: v for k, v in action.items() if k in ("doc", "doc_as_upsert", "upsert", "script")}
        return key, {op: meta}, doc
    source = action.get("_source")
    if not isinstance(source, dict):
        source = {k: v for k, v in action.items() if not k.startswith("_")}
    return key, {op: meta}, source


def bulk_body(lines: Iterable[tuple[Mapping[str, object], Mapping[str, object] | None]]) -> str:
    """The NDJSON body of a bulk request: each action's metadata line, then its document (if any)."""
    out = []
    for meta, doc in lines:
        out.append(json.dumps(meta))
        if doc is not None:
            out.append(json.dumps(doc, ensure_ascii=False))
    return "\n".join(out) + "\n"


def _ndjson(chunk: Sequence[tuple[str, dict[str, object], dict[str, object] | None]]) -> str:
    return bulk_body((meta, doc) for _, meta, doc in chunk)


def _write_chunk(client: OpenSearch, chunk: list[tuple[str, dict[str, object], dict[str, object] | None]],
                 policy: RetrySettings, refresh: bool | str, report: BulkReport, on_retry: Callable[[], None],
                 progress: Callable[[int], None] | None) -> None:
    try:
        refused, stuck = send_bulk(client, chunk, _ndjson, policy, on_retry, refresh=refresh)
    except TransportError as e:
        if policy.max_retries == 0:
            raise  # no retries asked for: the caller maps the node's own error (see retry_call)
        raise BulkError(f"bulk write failed: {e}", fix="check the node's health and retry") from e
    for (key, _, _), _, status, error in refused + stuck:
        if status == 404:
            report.missing.append(key)
        else:
            report.failed[key] = str(error)[:300]
    report.retryable.extend(key for (key, _, _), _, _, _ in stuck)
    report.written += len(chunk) - len(refused) - len(stuck)
    if progress:
        progress(len(chunk))
