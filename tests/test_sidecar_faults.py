"""Node faults while the sidecar serves, through a loopback proxy in front of the real node
(the shared node itself is never stopped): shut -> 503 + Retry-After, reopen -> served again
without restarting the sidecar; a stalled node -> 503 after the request timeout."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest
from test_sidecar_e2e import SHOP_FACETS, make_app
from test_sidecar_support import LoopbackProxy, serve_app

pytestmark = pytest.mark.integration


def _post(base: str, path: str, body: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture
def proxy(opensearch_url):
    target = urlparse(opensearch_url)
    p = LoopbackProxy(target.hostname, target.port).open()
    yield p
    p.close()


def test_node_stop_and_start_while_serving(shop, proxy):
    app = make_app(shop, proxy.url, facets=SHOP_FACETS, request_timeout_s=2.0, retry_after_s=3)
    query = {"q": "red running shoes"}
    with serve_app(app) as base:
        status, _, body = _post(base, "/v1/search", query)
        assert status == 200 and body["results"]
        proxy.close()  # the node "stops"
        for _ in range(2):
            status, headers, body = _post(base, "/v1/search", query)
            assert status == 503, body
            assert headers["Retry-After"] == "3" and body["error"]["code"] == "node_unavailable"
        # An event sent while the node is away is refused at once, as a 503 (not a 500, not a hang).
        status, headers, body = _post(base, "/v1/events",
                                      {"events": [{"user_id": "u-fault", "item_id": "p1", "kind": "click"}]})
        assert status == 503 and body["error"]["code"] == "node_unavailable", body
        try:
            urllib.request.urlopen(base + "/readyz", timeout=30)
            raise AssertionError("/readyz must not be ready while the node is away")
        except urllib.error.HTTPError as e:
            assert e.code == 503
        proxy.open()  # the node "starts" again on the same address
        status, _, body = _post(base, "/v1/search", query)
        assert status == 200 and body["results"]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'osreco_errors_total{code="node_unavailable",endpoint="/v1/search"} 2.0' in metrics


def test_stalled_node_times_out_with_503(shop, opensearch_url, proxy):
    app = make_app(shop, proxy.url, facets=SHOP_FACETS, request_timeout_s=1.0)
    client = app.test_client()
    assert client.post("/v1/search", json={"q": "laptop"}).status_code == 200
    proxy.stall = True
    resp = client.post("/v1/search", json={"q": "jacket"})
    proxy.stall = False
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert "did not answer" in resp.get_json()["error"]["message"]

