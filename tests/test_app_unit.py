"""Pure-unit tests of the sidecar shell: request validation, auth, limits and error mapping.

The collaborators are a small hand-written fake; nothing here is about OpenSearch behaviour.
"""

from __future__ import annotations

import json

import pytest

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin import schemas
from osreco.plugin.app import create_app
from osreco.plugin.config import Limits, SidecarConfig
from osreco.plugin.errors import ConfigError, NodeUnavailableError, NotReadyError, RequestError
from osreco.plugin.security import KeyChecker, append_key, create_key, load_keys

OS = OpenSearchConfig(url="http://127.0.0.1:9")


class FakeServices:
    """Records calls; raises what it is told to raise."""

    def __init__(self, raise_on_search: Exception | None = None):
        self.calls: list[tuple[str, object]] = []
        self.raise_on_search = raise_on_search

    def search(self, req):
        self.calls.append(("search", req))
        if self.raise_on_search:
            raise self.raise_on_search
        return {"results": [], "parser": "rules", "degradations": [], "timed_out": False}

    def recommend(self, req):
        self.calls.append(("recommend", req))
        return {"results": [], "degradations": []}

    def similar(self, item_id, req):
        self.calls.append(("similar", (item_id, req)))
        return {"results": [], "degradations": []}

    def record_events(self, events):
        self.calls.append(("events", events))
        return {"accepted": len(events)}

    def forget(self, user_id):
        self.calls.append(("forget", user_id))
        return {"user_id": user_id, "events_deleted": 0, "user_deleted": False}

    def readiness(self):
        raise NotReadyError("bundle artifact_id abc != index _meta.artifact_id def",
                            fix="re-ingest the catalog with this bundle")


def _client(services=None, **overrides):
    config = SidecarConfig(opensearch=OS, alias="items", dev_mode=True, **overrides)
    services = services or FakeServices()
    return create_app(config, services=services).test_client(), services


def test_search_parses_and_calls_service():
    client, fake = _client()
    resp = client.post("/v1/search", json={"q": " red shoes ", "k": 5, "page": 2,
                                           "filters": {"brand": ["Nike"], "price": {"lte": 50}}})
    assert resp.status_code == 200
    req = fake.calls[0][1]
    assert req == schemas.SearchRequest(q="red shoes", k=5, page=2,
                                        filters=(("brand", ("nike",)), ("price", {"lte": 50.0})))
    assert req.offset == 5


@pytest.mark.parametrize("body,field", [
    ({}, "q"),
    ({"q": ""}, "q"),
    ({"q": 3}, "q"),
    ({"q": "x" * 513}, "q"),
    ({"q": "x", "k": 101}, "k"),
    ({"q": "x", "k": True}, "k"),
    ({"q": "x", "page": 0}, "page"),
    ({"q": "x", "k": 100, "page": 11}, "page"),
    ({"q": "x", "language": "fr"}, "language"),
    ({"q": "x", "user_id": ""}, "user_id"),
    ({"q": "x", "sort": "price"}, "sort"),
    ({"q": "x", "filters": {"Brand!": "a"}}, "filters.Brand!"),
    ({"q": "x", "filters": {"price": {"lte": "cheap"}}}, "filters.price.lte"),
    ({"q": "x", "filters": {"price": {"near": 3}}}, "near"),
    ({"q": "x", "filters": {"brand": 3}}, "filters.brand"),
    ([1, 2], "body"),
])
def test_search_400_names_the_field(body, field):
    client, fake = _client()
    resp = client.post("/v1/search", json=body)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["field"] == field
    assert fake.calls == []


def test_invalid_json_and_oversized_body():
    client, _ = _client()
    resp = client.post("/v1/search", data="{not json", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "body"
    resp = client.post("/v1/search", data=json.dumps({"q": "a" * 70000}), content_type="application/json")
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"


def test_events_single_and_batch():
    client, fake = _client()
    ev = {"user_id": "u1", "item_id": "42", "kind": "rating", "value": 5}
    assert client.post("/v1/events", json=ev).status_code == 202
    assert fake.calls[-1][1] == (schemas.Event(user_id="u1", item_id="42", kind="rating", value=5.0),)
    resp = client.post("/v1/events", json={"events": [ev, {**ev, "kind": "click", "value": None}]})
    assert resp.status_code == 202 and resp.get_json() == {"accepted": 2}
    bad = client.post("/v1/events", json={"events": [ev, {**ev, "kind": "like"}]})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "events[1].kind"
    norating = client.post("/v1/events", json={**ev, "value": None})
    assert norating.get_json()["error"]["field"] == "event.value"


def test_recommend_similar_forget_args():
    client, fake = _client()
    assert client.get("/v1/recommend?user_id=u7&k=3").status_code == 200
    assert fake.calls[-1] == ("recommend", schemas.PageRequest(k=3, user_id="u7"))
    assert client.get("/v1/recommend").get_json()["error"]["field"] == "user_id"
    assert client.get("/v1/recommend?user_id=u&k=abc").get_json()["error"]["field"] == "k"
    assert client.get("/v1/recommend?user_id=u&x=1").get_json()["error"]["field"] == "x"
    assert client.get("/v1/items/a-1/similar?k=4").status_code == 200
    assert fake.calls[-1] == ("similar", ("a-1", schemas.PageRequest(k=4)))
    assert client.delete("/v1/users/u7").get_json()["user_id"] == "u7"


def test_node_unavailable_maps_to_503_with_retry_after():
    fake = FakeServices(raise_on_search=NodeUnavailableError("node down", retry_after_s=7))
    client, _ = _client(fake)
    resp = client.post("/v1/search", json={"q": "x"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "7"
    assert resp.get_json()["error"]["code"] == "node_unavailable"


def test_unexpected_error_is_500_without_internals():
    client, _ = _client(FakeServices(raise_on_search=KeyError("secret internals")))
    resp = client.post("/v1/search", json={"q": "x"})
    assert resp.status_code == 500 and "secret" not in resp.get_data(as_text=True)


def test_readyz_refuses_on_mismatch_and_healthz_is_up():
    client, _ = _client()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "artifact_id" in resp.get_json()["error"]["message"]
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/nope").status_code == 404


def test_metrics_count_requests_and_errors():
    client, _ = _client()
    client.post("/v1/search", json={"q": "x"})
    client.post("/v1/search", json={"q": ""})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'osreco_request_seconds_count{endpoint="/v1/search",status="200"} 1.0' in text
    assert 'osreco_errors_total{code="invalid_request",endpoint="/v1/search"} 1.0' in text


def test_openapi_describes_every_route():
    client, _ = _client()
    spec = client.get("/openapi.json").get_json()
    app = create_app(SidecarConfig(opensearch=OS, alias="items", dev_mode=True), services=FakeServices())
    rules = {r.rule.replace("<path:", "{").replace(">", "}") for r in app.url_map.iter_rules()
             if r.endpoint != "static"}
    assert rules == set(spec["paths"])


def test_api_keys_hashed_at_rest_and_required(tmp_path):
    path = tmp_path / "keys.json"
    key, record = create_key("shop-frontend")
    append_key(path, record)
    stored = path.read_text()
    assert key.split("_", 2)[2] not in stored and record.digest in stored
    assert (path.stat().st_mode & 0o777) == 0o600
    config = SidecarConfig(opensearch=OS, alias="items", api_keys_file=str(path), hmac_key="k" * 32)
    client = create_app(config, services=FakeServices()).test_client()
    assert client.post("/v1/search", json={"q": "x"}).status_code == 401
    wrong = key[:-2] + ("aa" if not key.endswith("aa") else "bb")
    assert client.post("/v1/search", json={"q": "x"}, headers={"X-API-Key": wrong}).status_code == 401
    assert client.post("/v1/search", json={"q": "x"}, headers={"X-API-Key": "garbage"}).status_code == 401
    ok = client.post("/v1/search", json={"q": "x"}, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200
    assert KeyChecker(load_keys(path)).check(key).name == "shop-frontend"


def test_config_requires_keys_outside_dev_mode(tmp_path):
    with pytest.raises(ConfigError) as e:
        SidecarConfig(opensearch=OS, alias="items")
    assert e.value.field == "OSRECO_API_KEYS_FILE"
    with pytest.raises(ConfigError):
        SidecarConfig(opensearch=OS, alias="Items", dev_mode=True)
    with pytest.raises(ConfigError):
        Limits(max_k=101)
    cfg = SidecarConfig.from_env({"OSRECO_DEV_MODE": "1", "OSRECO_INDEX": "shop", "OSRECO_FUSION": "linear",
                                  "OSRECO_CF_WEIGHT": "0.5"}, opensearch=OS)
    assert (cfg.alias, cfg.fusion.method, cfg.fusion.cf_weight, cfg.prefix) == ("shop", "linear", 0.5, "shop")
    with pytest.raises(ConfigError) as e:
        SidecarConfig.from_env({"OSRECO_DEV_MODE": "1", "OSRECO_MAX_K": "ten"}, opensearch=OS)
    assert e.value.field == "OSRECO_MAX_K"


def test_parse_filters_exact():
    assert schemas.parse_filters({"color": "Red ", "year": {"gte": 1990, "lt": 2000}}) == (
        ("color", ("red",)), ("year", {"gte": 1990.0, "lt": 2000.0}))
    with pytest.raises(RequestError):
        schemas.parse_filters({"genres": []})


def test_event_timestamps_validated():
    ok = schemas.parse_event({"user_id": "u", "item_id": "i", "kind": "click", "timestamp": "2026-01-02T03:04:05Z"})
    assert ok.timestamp == "2026-01-02T03:04:05Z"
    assert schemas.parse_event({"user_id": "u", "item_id": "i", "kind": "view", "timestamp": 1.7e9}).timestamp == 1.7e9
    for bad in ("yesterday", -5, True):
        with pytest.raises(RequestError) as e:
            schemas.parse_event({"user_id": "u", "item_id": "i", "kind": "view", "timestamp": bad})
        assert e.value.field == "event.timestamp"


def test_event_value_fits_the_stored_float():
    assert schemas.parse_event({"user_id": "u", "item_id": "i", "kind": "view", "value": -3.4e38}).value == -3.4e38
    with pytest.raises(RequestError) as e:   # finite here, -Infinity as the index's 32-bit float
        schemas.parse_event({"user_id": "u", "item_id": "i", "kind": "view", "value": -1.7976931348623157e308})
    assert e.value.field == "event.value"


def test_sidecar_import_does_not_load_torch():
    import subprocess
    import sys

    code = ("import sys, osreco.plugin.app, osreco.plugin.service, osreco.plugin.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_apikey_cli_creates_hashed_key(tmp_path):
    from click.testing import CliRunner

    from osreco.plugin.cli import apikey

    path = tmp_path / "keys.json"
    res = CliRunner().invoke(apikey, ["create", "--file", str(path), "--name", "web", "--json"])
    assert res.exit_code == 0, res.output
    key = json.loads(res.output)["key"]
    assert key not in path.read_text()
    assert KeyChecker(load_keys(path)).check(key).name == "web"
