"""NodeTransport: every call the sidecar makes to the OpenSearch node, and the one rule that
turns what went wrong there into the sidecar's errors.

The rule (:func:`node_error` and :data:`UNAVAILABLE_STATUSES`):

* no answer within ``request_timeout_s``, or no connection: ``NodeUnavailableError``
  (503 + ``Retry-After``);
* an error status 429, 502, 503 or 504: ``NodeUnavailableError`` as well (the node is
  overloaded or a proxy in front of it is) — for a failed call, and for an ``_msearch``
  whose every sub-search failed with one of them;
* 404 ``index_not_found``: ``NotReadyError`` (503: nothing ingested under the alias yet);
* 400 on a query built from the request's values (:data:`REQUEST_QUERIES`): ``RequestError`` (400)
  — for a failed call, and for an ``_msearch`` whose every sub-search failed, one of them with
  400; a 400 on anything else (facet vocabulary, pipelines, events) is osreco's or the index's
  fault, a 502;
* any other error status of a failed call: ``UpstreamError`` (502).

A sub-search that fails while the others answer does not fail the request: it is reported
(``shard_failures``, with its status), as are ``timed_out`` and failed shards, next to the
results it spoiled. Messages never carry the node's exception names or reasons: those are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from opensearchpy import ConnectionError as OSConnectionError
from opensearchpy import ConnectionTimeout, OpenSearch, TransportError

from osreco.ingest.connection import connect
from osreco.plugin.config import SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import NodeUnavailableError, NotReadyError, PluginError, RequestError, UpstreamError
from osreco.plugin.fusion import SignalResult, read_msearch
from osreco.plugin.metrics import Metrics
from osreco.plugin.query import MsearchPlan

T = TypeVar("T")
Read = tuple[dict[str, SignalResult], dict[str, Any]]
"""Per-signal results, and the response's ``{"timed_out", "shard_failures"}`` report."""

UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})
log = logging.getLogger("osreco.plugin.transport")

__all__ = ["NodeTransport", "Read", "UNAVAILABLE_STATUSES", "node_error", "rejected"]


REQUEST_QUERIES = frozenset({"search", "recommend", "similar", "item", "history", "neighbors", "titles"})
"""Calls whose query is built from the request's values: a 400 there is the request's fault. A 400
on anything else (the facet vocabulary, pipelines, events, forget) is the index's or osreco's, a 502."""


def node_error(what: str, status: int, reason: object, *, alias: str, retry_after_s: int) -> PluginError:
    """The sidecar's error for a node error status (the rule in the module docstring).

    Args:
        what: the call, for the message (``search``, ``forget``, ...).
        status: the HTTP status the node (or a proxy before it) answered.
        reason: the node's error (type and reason).
        alias: the item alias, named when it does not exist.
        retry_after_s: the ``Retry-After`` of a 503.
    """
    if status in UNAVAILABLE_STATUSES:
        return NodeUnavailableError(f"OpenSearch is overloaded or unavailable ({what}: {status})",
                                    retry_after_s=retry_after_s)
    if status == 404 and "index_not_found" in str(reason):
        return NotReadyError(f"index {alias!r} does not exist ({what})",
                             fix="ingest a catalog with `osreco ingest` first")
    log.warning("OpenSearch answered %s with %s: %s", what, status, reason)
    if status == 400 and what in REQUEST_QUERIES:
        return rejected(what)
    return UpstreamError(f"OpenSearch refused {what} (status {status})",
                         fix="see the sidecar's log for the node's answer")


def rejected(what: str) -> RequestError:
    """The 400 for a query the node could not run: the request's values do not fit the index."""
    return RequestError(f"OpenSearch could not run the {what} query built from this request", field="body",
                        fix="check the filter values against the index's fields and types")


class NodeTransport:
    """The node as the sidecar sees it: calls with errors mapped, searches read with their
    failures reported.

    Args:
        client: the opensearch-py client (one retry, no retry on timeout).
        alias: the item alias every search goes through.
        metrics: counts shard failures and timeouts.
        request_timeout_s: the client's socket timeout (named in the 503).
        search_timeout_s: the per-search budget sent to the node (named when it is hit).
        retry_after_s: ``Retry-After`` of every 503.
    """

    def __init__(self, client: OpenSearch, alias: str, metrics: Metrics, *, request_timeout_s: float,
                 search_timeout_s: float, retry_after_s: int):
        self.client, self.alias, self.metrics = client, alias, metrics
        self.request_timeout_s, self.search_timeout_s = request_timeout_s, search_timeout_s
        self.retry_after_s = retry_after_s
        self.on_indexes: Callable[[set[str]], None] | None = None  # the hot-reload's ``saw_indexes``

    @classmethod
    def from_config(cls, config: SidecarConfig, metrics: Metrics, client: OpenSearch | None = None) -> NodeTransport:
        """The node of ``config`` with its timeouts; ``client`` defaults to one on
        ``config.opensearch`` (the request timeout, one retry, a pool for the sidecar's threads)."""
        if client is None:
            client = connect(replace(config.opensearch, timeout_s=config.request_timeout_s),
                             max_retries=1, retry_on_timeout=False, pool_maxsize=64)
        return cls(client, config.alias, metrics, request_timeout_s=config.request_timeout_s,
                   search_timeout_s=config.search_timeout_s, retry_after_s=config.retry_after_s)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, a call to the node; its failures mapped by the one rule.

        Raises:
            NodeUnavailableError: no connection, no answer in time, or 429/502/503/504.
            NotReadyError: the index (alias) does not exist.
            UpstreamError: any other error status.
        """
        try:
            return fn(*args, **kwargs)
        except ConnectionTimeout as e:
            raise NodeUnavailableError(f"OpenSearch did not answer {what} within {self.request_timeout_s}s",
                                       retry_after_s=self.retry_after_s,
                                       fix="retry later; check the node's load") from e
        except OSConnectionError as e:
            raise NodeUnavailableError(f"OpenSearch is unreachable ({what})", retry_after_s=self.retry_after_s,
                                       fix="retry later; check that the node is running") from e
        except TransportError as e:
            status = e.status_code if isinstance(e.status_code, int) else 0
            raise node_error(what, status, e.error, alias=self.alias, retry_after_s=self.retry_after_s) from e

    def msearch(self, what: str, plan: MsearchPlan, deg: Degradations) -> Read:
        """One ``_msearch`` of ``plan``, read by :meth:`read`."""
        resp = self.call(what, self.client.msearch, body=plan.lines)
        return self.read(plan.signals, resp["responses"], deg)

    def search(self, what: str, signal: str, body: dict, deg: Degradations) -> Read:
        """One search of the alias whose hits are ``signal``'s, read by :meth:`read`."""
        resp = self.call(what, self.client.search, index=self.alias, body=body)
        return self.read([signal], [resp], deg)

    def read(self, signals: Sequence[str], responses: Sequence[Mapping], deg: Degradations) -> Read:
        """Per-signal results; errors, ``timed_out`` and shard failures reported, not hidden.

        Raises:
            NodeUnavailableError: every sub-search failed with an unavailable status (the rule).
            RequestError: every sub-search failed, one with 400 (the request's query).
        """
        read = read_msearch(signals, responses)
        if self.on_indexes is not None:
            self.on_indexes({str(h["_index"]) for r in read.values() for h in r.hits if "_index" in h})
        status_of = {s: r.get("status") for s, r in zip(signals, responses) if r.get("error") is not None}
        for signal, status in status_of.items():
            log.warning("sub-search %s failed with %s: %s", signal, status, read[signal].error)
        statuses = list(status_of.values())
        if statuses and len(statuses) == len(responses):
            if all(s in UNAVAILABLE_STATUSES for s in statuses):
                raise NodeUnavailableError(f"OpenSearch refused every sub-search (status {statuses[0]})",
                                           retry_after_s=self.retry_after_s)
            if 400 in statuses:
                raise rejected("search")
        failures = [{"signal": r.signal, "error": f"status {status_of.get(r.signal) or 'unknown'}"} if r.error else
                    {"signal": r.signal, "failed_shards": r.failed_shards}
                    for r in read.values() if r.error or r.failed_shards]
        timed_out = any(r.timed_out for r in read.values())
        if failures:
            self.metrics.shard_failures.labels("shards").inc()
            deg.add("shard_failures", f"partial results: {failures}")
        if timed_out:
            self.metrics.shard_failures.labels("timed_out").inc()
            deg.add("timed_out", f"OpenSearch hit the {self.search_timeout_s}s budget: partial results")
        return read, {"timed_out": timed_out, "shard_failures": failures}
