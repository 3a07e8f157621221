"""Pure-unit tests of the sidecar shell: request validation, auth, limits and error mapping.

The collaborators are a small hand-written fake; nothing here is about OpenSearch behaviour.
"""

from __future__ import annotations

import http.client
import io
import json
import urllib.parse

import pytest

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin import schemas
from osreco.plugin.app import MAX_HEADER_BYTES, MAX_URL_BYTES, create_app, json_depth
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
    epoch = schemas.parse_event({"user_id": "u", "item_id": "i", "kind": "view", "timestamp": 1.7e9})
    assert epoch.timestamp == "2023-11-14T22:13:20Z"
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


# ---- client input never becomes a 500; errors name the field ----

SURROGATE = "\ud800"


def _post_raw(client, path: str, body: str | bytes, **kw):
    data = body.encode("utf-8") if isinstance(body, str) else body
    return client.post(path, data=data, content_type="application/json", **kw)


@pytest.mark.parametrize("path,body,field", [
    ("/v1/search", '{"q": "red \\ud800 shoes"}', "q"),
    ("/v1/search", '{"q": "x", "user_id": "u\\udfff"}', "user_id"),
    ("/v1/search", '{"q": "x", "filters": {"brand": "\\ud800"}}', "filters.brand"),
    ("/v1/search", '{"q": "x", "filters": {"brand": ["nike", "\\udc00"]}}', "filters.brand"),
    ("/v1/search", '{"q": "x", "filters": {"\\ud800": "a"}}', "filters.\\ud800"),
    ("/v1/search", '{"q": "x", "\\ud800": 1}', "\\ud800"),
    ("/v1/events", '{"user_id": "\\ud800", "item_id": "i", "kind": "view"}', "event.user_id"),
    ("/v1/events", '{"user_id": "u", "item_id": "\\ud800", "kind": "view"}', "event.item_id"),
    ("/v1/events", '{"user_id": "u", "item_id": "i", "kind": "view", "query": "\\ud800"}', "event.query"),
    ("/v1/events", '{"user_id": "u", "item_id": "i", "kind": "view", "session_id": "s\\ud800"}',
     "event.session_id"),
    ("/v1/events", '{"events": [{"user_id": "u", "item_id": "\\ud800", "kind": "view"}]}', "events[0].item_id"),
])
def test_lone_surrogates_in_json_are_400_naming_the_field(path, body, field):
    client, fake = _client()
    resp = _post_raw(client, path, body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["field"] == field
    resp.get_data().decode("utf-8")   # the error body itself is valid UTF-8
    assert fake.calls == []


@pytest.mark.parametrize("method,url,field", [
    ("get", "/v1/recommend?user_id=%ED%A0%80", "user_id"),
    ("get", "/v1/recommend?user_id=u&k=%FF", "k"),
    ("get", "/v1/items/%ED%A0%80/similar", "item_id"),
    ("delete", "/v1/users/u%ED%B0%80", "user_id"),
])
def test_path_and_query_string_not_utf8_are_400_naming_the_parameter(method, url, field):
    client, fake = _client()
    path, _, query = url.partition("?")
    # PATH_INFO as a WSGI server passes it: the unquoted bytes as latin-1 (the test client would
    # already have replaced them with U+FFFD)
    raw_path = urllib.parse.unquote_to_bytes(path).decode("latin-1")
    resp = getattr(client, method)(url, environ_overrides={"PATH_INFO": raw_path})
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field
    assert fake.calls == []


def test_deeply_nested_body_under_the_size_cap_is_400_not_a_recursion_error():
    client, fake = _client()
    for body in ("[" * 30000 + "]" * 30000, '{"q": "x", "filters": ' + '{"a":' * 40 + "1" + "}" * 41):
        resp = _post_raw(client, "/v1/search", body)
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "body"
        assert "32" in resp.get_json()["error"]["message"]
    brackets_in_text = _post_raw(client, "/v1/search", json.dumps({"q": "[[[" * 50 + '"\\'}))
    assert brackets_in_text.status_code == 200   # brackets inside strings are text, not nesting
    assert fake.calls[0][1].q == "[[[" * 50 + '"\\'


@pytest.mark.parametrize("filters,field", [
    ({"price": {"lte": 1e308}}, "filters.price.lte"),
    ({"price": {"gte": -3.5e38}}, "filters.price.gte"),
    ({"popularity": {"gt": 1e39}}, "filters.popularity.gt"),
    ({"year": {"gte": 1e300}}, "filters.year.gte"),
    ({"year": {"lt": 2**31}}, "filters.year.lt"),
    ({"year": {"gt": -(2**31) - 1}}, "filters.year.gt"),
    ({"price": {"lte": 10**400}}, "filters.price.lte"),
])
def test_range_filters_outside_the_field_type_are_400(filters, field):
    client, fake = _client()
    resp = client.post("/v1/search", json={"q": "x", "filters": filters})
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == field
    assert fake.calls == []
    # the edges of each type still pass
    assert schemas.parse_filters({"price": {"lte": 3.4e38}, "year": {"gte": -(2**31), "lte": 2**31 - 1}}) == (
        ("price", {"lte": 3.4e38}), ("year", {"gte": float(-(2**31)), "lte": float(2**31 - 1)}))


@pytest.mark.parametrize("body", ['{"q": "x", "k": NaN}', '{"q": "x", "filters": {"price": {"lte": Infinity}}}',
                                  '{"user_id": "u", "item_id": "i", "kind": "view", "value": -Infinity}'])
def test_non_json_number_constants_are_400(body):
    client, fake = _client()
    resp = _post_raw(client, "/v1/events" if "kind" in body else "/v1/search", body)
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "body"
    assert fake.calls == []


def test_chunked_body_over_the_cap_is_413_not_truncated():
    client, fake = _client()
    chunked = {"headers": {"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
               "environ_overrides": {"wsgi.input_terminated": True}}
    for body in (b'{"q": "x"' + b" " * 70000 + b"}", json.dumps({"q": "x" * 70000}).encode()):
        resp = client.post("/v1/search", input_stream=io.BytesIO(body), **chunked)
        assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"
    assert fake.calls == []
    ok = client.post("/v1/search", input_stream=io.BytesIO(b'{"q": "red shoes"}'), **chunked)
    assert ok.status_code == 200 and fake.calls[0][1].q == "red shoes"


def test_long_url_is_json_414_and_big_headers_json_431():
    client, fake = _client()
    long_url = client.get("/v1/recommend?user_id=" + "a" * (MAX_URL_BYTES + 1))
    assert long_url.status_code == 414 and long_url.get_json()["error"]["code"] == "uri_too_long"
    big = client.get("/v1/recommend?user_id=u", headers={"X-Pad": "a" * (MAX_HEADER_BYTES + 1)})
    assert big.status_code == 431 and big.get_json()["error"]["code"] == "headers_too_large"
    assert fake.calls == []
    assert client.get("/v1/recommend?user_id=u", headers={"X-Pad": "a" * 1000}).status_code == 200


def test_json_depth_counts_nesting_outside_strings():
    assert json_depth(b'{"a": [1, {"b": "[[{{"}]}') == 3
    assert json_depth(b'"\\"[["') == 0 and json_depth(b"[]") == 1 and json_depth(b"1") == 0


def test_gunicorn_answers_chunked_413_and_json_414_431():
    """The real server: gunicorn with the project's config, 2 workers x 4 threads."""
    from servers import gunicorn_sidecar

    env = {"OPENSEARCH_URL": "http://127.0.0.1:9", "OSRECO_DEV_MODE": "1", "OSRECO_INDEX": "no-such-items"}
    with gunicorn_sidecar(env, workers=2, threads=4) as url:
        host, port = url.removeprefix("http://").split(":")

        def send(path: str, headers: dict[str, str] | None = None, chunks: list[bytes] | None = None):
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                conn.putrequest("POST" if chunks is not None else "GET", path)
                for k, v in (headers or {}).items():
                    conn.putheader(k, v)
                if chunks is not None:
                    conn.putheader("Transfer-Encoding", "chunked")
                    conn.putheader("Content-Type", "application/json")
                conn.endheaders()
                for chunk in chunks or []:
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if chunks is not None:
                    conn.send(b"0\r\n\r\n")
                resp = conn.getresponse()
                return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
            finally:
                conn.close()

        event = json.dumps({"user_id": "u", "item_id": "i", "kind": "view"}).encode()
        for chunks in ([event[:-1], b" " * 70000, b"}"], [b'{"events": [', b"%s," % event * 2000, event + b"]}"]):
            status, ctype, body = send("/v1/events", chunks=chunks)
            assert (status, ctype, body["error"]["code"]) == (413, "application/json", "payload_too_large")
        for path, field in (("/v1/items/%ED%A0%80/similar", "item_id"), ("/v1/recommend?user_id=u%ED%A0%80",
                                                                            "user_id")):
            status, ctype, body = send(path)
            assert (status, ctype, body["error"]["field"]) == (400, "application/json", field)
        status, ctype, body = send("/v1/recommend?user_id=" + "a" * 20000)
        assert (status, ctype, body["error"]["code"]) == (414, "application/json", "uri_too_long")
        status, ctype, body = send("/v1/recommend?user_id=u", headers={"X-Pad": "a" * 40000})
        assert (status, ctype, body["error"]["code"]) == (431, "application/json", "headers_too_large")
        status, ctype, body = send("/v1/recommend?user_id=u", headers={f"X-Pad-{i}": "a" * 100 for i in range(200)})
        assert (status, ctype, body["error"]["code"]) == (431, "application/json", "headers_too_large")


def test_unread_recent_events_are_a_fixed_degradation_without_node_text(caplog):
    from types import SimpleNamespace

    from opensearchpy import TransportError

    from osreco.plugin.degradations import Degradations
    from osreco.plugin.recommend import Recommender

    class FailingClient:
        def msearch(self, **_):
            raise TransportError(500, "node secret: shard [3] on n-7", {"reason": "node secret"})

    transport = SimpleNamespace(client=FailingClient())
    users = SimpleNamespace(store=SimpleNamespace(prefix="items"))
    rec = Recommender(transport, users, None, None, lambda k: None)  # only the events read is exercised
    deg = Degradations(SimpleNamespace(degraded=lambda kind: None))
    with caplog.at_level("WARNING", logger="osreco.plugin"):
        assert rec._recent_events("u_x", deg) == []
    assert deg.items == [{"kind": "user_events", "message": "recent events not read: the events index did not answer"}]
    assert any("node secret" in r.getMessage() for r in caplog.records)  # logged, not sent
