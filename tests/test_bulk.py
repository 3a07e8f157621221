"""The shared bulk-write path and the one row reader, on stubs and temporary files (no OpenSearch)."""

from __future__ import annotations

import json

import pytest
from opensearchpy import ConnectionError as OSConnectionError

from osreco.ingest.bulk import RetryPolicy, bulk_write
from osreco.ingest.errors import BulkError, RowError
from osreco.ingest.rows import read_rows

FAST = RetryPolicy(max_retries=2, backoff_base_s=0.0, backoff_max_s=0.0)


class StubClient:
    """Answers each bulk request with the statuses ``answer(op line, attempt)`` gives."""

    def __init__(self, answer):
        self.answer = answer
        self.bodies: list[str] = []
        self.params: list[dict] = []

    def bulk(self, body: str, request_timeout: float, **params):
        self.bodies.append(body)
        self.params.append(params)
        lines = [json.loads(line) for line in body.splitlines()]
        items, i = [], 0
        while i < len(lines):
            op, meta = next(iter(lines[i].items()))
            i += 1 if op == "delete" else 2
            status = self.answer(meta, len(self.bodies))
            items.append({op: {"_id": meta.get("_id"), "status": status,
                               **({"error": {"type": "x", "reason": f"status {status}"}} if status >= 300 else {})}})
        return {"items": items}


def _updates(ids):
    return [{"_op_type": "update", "_index": "i", "_id": i, "doc": {"v": 1}} for i in ids]


def test_every_action_lands_in_one_bucket_and_429_is_retried():
    asked: set[str] = set()

    def answer(meta, attempt):
        first = meta["_id"] not in asked
        asked.add(meta["_id"])
        return {"gone": 404, "bad": 400, "busy": 429 if first else 200}.get(meta["_id"], 200)

    client = StubClient(answer)
    seen: list[int] = []
    report = bulk_write(client, _updates(["a", "gone", "bad", "busy", "b"]), FAST, chunk_size=3, progress=seen.append)
    assert (report.written, report.missing, list(report.failed)) == (3, ["gone"], ["bad"])
    assert report.retries == 1 and seen == [3, 2]
    assert '"doc": {"v": 1}' in client.bodies[0]



class DownClient:
    """A node that is not there: every bulk request fails to connect."""

    def __init__(self):
        self.calls = 0

    def bulk(self, body: str, request_timeout: float, **params):
        self.calls += 1
        raise OSConnectionError("N/A", "connection refused", None)


def test_a_dropped_connection_is_retried_then_named():
    client = DownClient()
    with pytest.raises(BulkError, match="failed after 3 attempts"):
        bulk_write(client, _updates(["a"]), FAST)
    assert client.calls == 3


def test_without_retries_the_nodes_own_error_comes_back_at_once():
    """A request-time caller (the sidecar's /v1/events) maps the node's error to a 503 itself."""
    client = DownClient()
    with pytest.raises(OSConnectionError):
        bulk_write(client, _updates(["a"]), RetryPolicy(max_retries=0))
    assert client.calls == 1

def test_items_still_refused_after_the_retries_count_as_failed():
    client = StubClient(lambda meta, attempt: 429)
    report = bulk_write(client, _updates(["a"]), FAST)
    assert report.written == 0 and list(report.failed) == ["a"] and report.retries == 2
    assert len(client.bodies) == 3


def test_index_actions_without_ids_and_refresh():
    client = StubClient(lambda meta, attempt: 201)
    actions = [{"_op_type": "index", "_index": "ev", "_source": {"k": n}} for n in range(3)]
    report = bulk_write(client, actions, FAST, refresh="wait_for")
    assert report.written == 3 and client.params == [{"refresh": "wait_for"}]
    assert client.bodies[0].splitlines()[:2] == ['{"index": {"_index": "ev"}}', '{"k": 0}']


def test_a_non_retryable_request_error_is_a_bulk_error():
    from opensearchpy.exceptions import RequestError

    class Refusing:
        def bulk(self, **kwargs):
            raise RequestError(400, "illegal_argument_exception", {})

    with pytest.raises(BulkError, match="bulk write failed"):
        bulk_write(Refusing(), _updates(["a"]), FAST)


def test_row_reader_formats_and_line_numbers(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"a": 1}\n\n{oops\n[1]\n', encoding="utf-8")
    rows = list(read_rows(jsonl))
    assert rows[0] == (1, {"a": 1})
    assert [(line, type(r).__name__) for line, r in rows[1:]] == [(3, "RowError"), (4, "RowError")]
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("user_id\titem_id\nu\t1\n", encoding="utf-8")
    assert list(read_rows(tsv)) == [(2, {"user_id": "u", "item_id": "1"})]
    sniffed = tmp_path / "rows.csv"
    sniffed.write_text("\ufeffuser_id\titem_id\nu\t1\n", encoding="utf-8")  # a BOM and tabs in a .csv
    assert list(read_rows(sniffed)) == [(2, {"user_id": "u", "item_id": "1"})]
    unknown = tmp_path / "rows.data"
    unknown.write_text('{"a": 2}\n', encoding="utf-8")
    assert list(read_rows(unknown, default="jsonl")) == [(1, {"a": 2})]
    bad = list(read_rows(jsonl))[1][1]
    assert isinstance(bad, RowError) and bad.line == 3 and "invalid JSON" in str(bad)
