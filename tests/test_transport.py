"""The sidecar's one rule from node errors to HTTP (osreco.plugin.transport), by value and
through the real app over a scripted client: 429/502/503/504 -> 503 + Retry-After for a failed
call and for an ``_msearch`` whose every sub-search failed; index_not_found -> 503 not ready;
400 -> a 400 without the node's internals; any other status of a failed call -> 502; a
sub-search failing next to others -> reported by status, never by the node's reason."""

from __future__ import annotations

import pytest
from opensearchpy import ConnectionError as OSConnectionError
from opensearchpy import ConnectionTimeout, TransportError

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig
from osreco.plugin.degradations import Degradations
from osreco.plugin.errors import NodeUnavailableError, NotReadyError, RequestError, UpstreamError
from osreco.plugin.metrics import Metrics
from osreco.plugin.models import ServedModels
from osreco.plugin.service import SearchService
from osreco.plugin.transport import UNAVAILABLE_STATUSES, NodeTransport, node_error

OK = {"hits": {"hits": [{"_id": "a", "_score": 1.0, "_source": {"title": "A"}}]}, "_shards": {"failed": 0}}


def failed(status: int, reason: str = "boom") -> dict:
    return {"error": {"type": "x", "reason": reason}, "status": status}


def transport(client: object = None, metrics: Metrics | None = None) -> NodeTransport:
    return NodeTransport(client, "items", metrics or Metrics(), request_timeout_s=2.0, search_timeout_s=1.0,
                         retry_after_s=7)


@pytest.mark.parametrize("status", sorted(UNAVAILABLE_STATUSES))
def test_unavailable_statuses_are_503_with_retry_after(status):
    e = node_error("search", status, "overloaded", alias="items", retry_after_s=7)
    assert isinstance(e, NodeUnavailableError) and e.status == 503 and e.retry_after_s == 7


def test_missing_index_is_not_ready_and_other_statuses_are_502():
    missing = node_error("search", 404, "index_not_found_exception", alias="items", retry_after_s=7)
    assert isinstance(missing, NotReadyError) and "'items' does not exist" in str(missing)
    for status, reason in ((404, "document_missing"), (500, "null_pointer_exception"), (0, "?")):
        e = node_error("search", status, reason, alias="items", retry_after_s=7)
        assert isinstance(e, UpstreamError) and e.status == 502 and f"status {status}" in str(e)
        assert reason not in str(e) and reason not in str(e.to_dict())


def test_a_node_400_is_the_requests_400_without_internals(caplog):
    reason = "search_phase_execution_exception: [float] supports only finite values"
    e = node_error("search", 400, reason, alias="items", retry_after_s=7)
    assert isinstance(e, RequestError) and e.status == 400 and e.field == "body"
    assert "exception" not in str(e.to_dict()) and "finite" not in str(e.to_dict())
    assert reason in caplog.text   # the details go to the log


def test_call_maps_transport_failures_by_the_rule():
    t = transport()

    def raising(exc: Exception):
        def fn():
            raise exc
        return fn

    with pytest.raises(NodeUnavailableError, match="did not answer search within 2.0s"):
        t.call("search", raising(ConnectionTimeout("TIMEOUT", "timed out", None)))
    with pytest.raises(NodeUnavailableError, match="unreachable"):
        t.call("search", raising(OSConnectionError("N/A", "refused", None)))
    with pytest.raises(NodeUnavailableError, match="502"):
        t.call("search", raising(TransportError(502, "bad_gateway", {})))
    with pytest.raises(RequestError):
        t.call("search", raising(TransportError(400, "parsing_exception", {})))
    with pytest.raises(UpstreamError):
        t.call("search", raising(TransportError(500, "null_pointer_exception", {})))
    assert t.call("search", lambda x: x + 1, 1) == 2


@pytest.mark.parametrize("status", sorted(UNAVAILABLE_STATUSES))
def test_every_sub_search_unavailable_is_503(status):
    with pytest.raises(NodeUnavailableError, match="every sub-search") as e:
        transport().read(["bm25", "dense"], [failed(status), failed(status)], Degradations(Metrics()))
    assert e.value.retry_after_s == 7


def test_sub_search_failures_next_to_answers_or_not_unavailable_are_reported():
    metrics = Metrics()
    deg = Degradations(metrics)
    t = transport(metrics=metrics)
    read, partial = t.read(["bm25", "dense"], [OK, failed(502)], deg)
    assert [h["_id"] for h in read["bm25"].hits] == ["a"] and read["dense"].error == "502 boom"
    assert partial == {"timed_out": False, "shard_failures": [{"signal": "dense", "error": "status 502"}]}
    _, partial = t.read(["bm25", "dense"], [OK, failed(400)], deg)
    assert partial["shard_failures"] == [{"signal": "dense", "error": "status 400"}]
    _, partial = t.read(["bm25", "dense"], [failed(500), failed(503)], deg)
    assert len(partial["shard_failures"]) == 2
    assert [d["kind"] for d in deg.items] == ["shard_failures"] * 3
    assert "boom" not in str([d for d in deg.items])


def test_every_sub_search_failing_with_a_400_is_the_requests_400():
    with pytest.raises(RequestError) as e:
        transport().read(["bm25", "dense"], [failed(400, "number_format_exception"), failed(503)],
                         Degradations(Metrics()))
    assert e.value.status == 400 and "number_format_exception" not in str(e.value.to_dict())


class ScriptedClient:
    """Answers the vocabulary search; ``msearch`` raises or answers as scripted."""

    def __init__(self, msearch: object):
        self._msearch = msearch

    def search(self, index: str, body: dict, **_: object) -> dict:
        return {"aggregations": {}}

    def msearch(self, body: list) -> dict:
        if isinstance(self._msearch, Exception):
            raise self._msearch
        return {"responses": [self._msearch for _ in body[::2]]}

    def get(self, index: str, id: str, **_: object) -> dict:
        return {"found": False}


def app_over(client: ScriptedClient):
    config = SidecarConfig(opensearch=OpenSearchConfig(url="http://localhost:9"), alias="items", dev_mode=True,
                           retry_after_s=7, embed_vocabulary=False)
    metrics = Metrics()
    service = SearchService.from_parts(config, client, metrics, ServedModels(metrics, encoder_error="none"))
    return create_app(config, services=service).test_client()


def test_the_rule_through_the_app():
    refused = app_over(ScriptedClient(TransportError(400, "parsing_exception", {}))).post("/v1/search", json={"q": "x"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "invalid_request"
    assert "parsing_exception" not in refused.get_data(as_text=True)
    broken = app_over(ScriptedClient(TransportError(500, "null_pointer_exception", {}))).post("/v1/search",
                                                                                            json={"q": "x"})
    assert broken.status_code == 502 and broken.get_json()["error"]["code"] == "upstream_error"
    assert "null_pointer_exception" not in broken.get_data(as_text=True)
    gateway = app_over(ScriptedClient(TransportError(502, "bad_gateway", {}))).post("/v1/search", json={"q": "x"})
    assert gateway.status_code == 503 and gateway.headers["Retry-After"] == "7"
    every = app_over(ScriptedClient(failed(502))).post("/v1/search", json={"q": "x"})
    assert every.status_code == 503 and every.headers["Retry-After"] == "7"
    assert every.get_json()["error"]["code"] == "node_unavailable"
    every_400 = app_over(ScriptedClient(failed(400))).post("/v1/search", json={"q": "x"})
    assert every_400.status_code == 400 and "boom" not in every_400.get_data(as_text=True)
    partial = app_over(ScriptedClient(failed(500))).post("/v1/search", json={"q": "x"})
    assert partial.status_code == 200 and partial.get_json()["shard_failures"][0]["error"] == "status 500"
    assert "boom" not in partial.get_data(as_text=True)
    assert app_over(ScriptedClient(OK)).get("/v1/items/a/similar").status_code == 404


def test_a_node_400_is_the_requests_fault_only_for_queries_built_from_the_request():
    from osreco.plugin.errors import RequestError, UpstreamError
    from osreco.plugin.transport import node_error

    assert isinstance(node_error("search", 400, "parse", alias="a", retry_after_s=1), RequestError)
    for what in ("vocabulary", "pipeline", "events", "forget"):  # not the client's doing: a 502
        err = node_error(what, 400, "search_phase_execution_exception", alias="a", retry_after_s=1)
        assert isinstance(err, UpstreamError) and err.status == 502 and "exception" not in err.message
