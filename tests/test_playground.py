"""The playground's backend (``plugin/playground.py``) through Flask's test client against the
real node: the 50-item e-commerce fixture (conftest.py's ``shop``) indexed with the tiny bundle."""

from __future__ import annotations

import pytest

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig
from osreco.plugin.playground import PAGE_CSP
from osreco.plugin.security import append_key, create_key

pytestmark = pytest.mark.integration
SHOP_FACETS = ("brand", "color", "category", "currency")
QUERY = "cheap red running shoes under $50, not Nike"
HMAC = "playground-test-hmac-key-" + "x" * 16


def _config(shop, url: str, **overrides) -> SidecarConfig:
    overrides.setdefault("dev_mode", True)
    return SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=shop.alias, bundle_dir=shop.bundle,
                         store_prefix=shop.prefix, facets=SHOP_FACETS, embed_vocabulary=False,
                         bundle_reload_s=0, **overrides)


@pytest.fixture(scope="module")
def client(shop, opensearch_url):
    return create_app(_config(shop, opensearch_url)).test_client()


def _colors(result: dict) -> set[str]:
    value = result["source"].get("color")
    return set(value) if isinstance(value, list) else {value}


def _search(client, **body):
    body.setdefault("q", QUERY)
    return client.post("/playground/api/search", json=body)


def test_page_and_static_files_with_a_strict_csp(client):
    page = client.get("/playground")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/playground/static/app.js").mimetype == "text/javascript"
    assert client.get("/playground/static/style.css").mimetype == "text/css"
    missing = client.get("/playground/static/../openapi.json")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_off_by_default_outside_dev_mode_and_api_behind_keys(shop, opensearch_url, tmp_path):
    path = tmp_path / "keys.json"
    key, record = create_key("playground")
    append_key(path, record)
    off = create_app(_config(shop, opensearch_url, dev_mode=False, api_keys_file=str(path),
                             hmac_key=HMAC)).test_client()
    for url in ("/playground", "/playground/static/app.js", "/playground/api/settings"):
        resp = off.get(url)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found", url
    assert all(not p.startswith("/playground") for p in off.get("/openapi.json").get_json()["paths"])
    on = create_app(_config(shop, opensearch_url, dev_mode=False, api_keys_file=str(path), hmac_key=HMAC,
                            playground=True)).test_client()
    assert on.get("/playground").status_code == 200       # the page carries no data: public
    assert on.get("/playground/api/settings").status_code == 401
    assert on.post("/playground/api/search", json={"q": "shoes"}).status_code == 401
    settings = on.get("/playground/api/settings", headers={"Authorization": f"Bearer {key}"})
    assert settings.status_code == 200
    text = settings.get_data(as_text=True)
    assert HMAC not in text and record.digest not in text
    assert settings.get_json()["settings"]["hmac_key"] == "(set)"


def test_settings_view(client, shop):
    body = client.get("/playground/api/settings").get_json()
    assert body["index"]["alias"] == shop.alias and body["index"]["docs"] == 50
    assert body["index"]["size_bytes"] > 0
    assert body["readiness"]["status"] == "ready"
    assert body["bundle"]["artifact_id"] == body["readiness"]["artifact_id"]
    assert body["cf_model"] is None and body["features"] == {"image": False, "audio": False}
    assert body["settings"]["alias"] == shop.alias and body["settings"]["fusion"]["method"] == "rrf"
    assert body["settings"]["dev_mode"] is True
    now = body["degradations"]  # what is degraded right now
    assert now["encoder"] is None and now["reranker_loaded"] is False and now["cf_model_loaded"] is False
    assert isinstance(now["requests_degraded"], dict)


def test_settings_hide_credentials_in_the_llm_url(shop, opensearch_url):
    app = create_app(_config(shop, opensearch_url, llm_url="http://bob:s3cret@llm.local:8000/v1?api-key=tok"))
    body = app.test_client().get("/playground/api/settings").get_json()
    assert body["settings"]["llm_url"] == "http://llm.local:8000/v1"


def test_search_shows_the_intent_as_chips(client):
    resp = _search(client)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    keys = {c["key"]: c for c in body["chips"]}
    assert {"filter:color=red", "filter:category=running shoes", "range:price", "exclude:brand=nike"} <= set(keys)
    assert keys["language:en"]["removable"] is False and keys["parser:rules"]["kind"] == "info"
    assert keys["exclude:brand=nike"]["kind"] == "exclude" and keys["range:price"]["removable"] is True
    assert body["results"] and all("red" in _colors(r) for r in body["results"])
    assert {"results", "intent", "parser", "degradations", "personalized"} <= set(body)


def test_dropping_a_chip_removes_that_part(client):
    before = _search(client).get_json()
    after = _search(client, drop=["filter:color=red"]).get_json()
    assert "color" in before["intent"]["filters"] and "color" not in after["intent"]["filters"]
    assert "filter:color=red" not in {c["key"] for c in after["chips"]}
    assert any("red" not in _colors(r) for r in after["results"])
    assert after["intent"]["exclude"] == before["intent"]["exclude"]
    no_range = _search(client, drop=["range:price"]).get_json()
    assert no_range["intent"]["ranges"] == {} and before["intent"]["ranges"]


@pytest.mark.parametrize(("body", "field"), [
    ({"drop": ["filter:color=blue"]}, "drop"),
    ({"drop": ["language:en"]}, "drop"),
    ({"drop": "sort"}, "drop"),
    ({"variant": {"temperature": 1}}, "variant.temperature"),
    ({"variant": {"fusion": "borda"}}, "variant.fusion"),
    ({"variant": {"cf_weight": -1}}, "variant.cf_weight"),
    ({"variant": {"bm25_weight": True}}, "variant.bm25_weight"),
    ({"variant": {"bm25_weight": 1e308, "dense_weight": 1e308}}, "variant.bm25_weight"),  # overflows the scores
    ({"variant": {"rerank": "no"}}, "variant.rerank"),
    ({"variant": []}, "variant"),
    ({"k": 0}, "k"),
    ({"filters": {}}, "filters"),
])
def test_bad_requests_name_the_field(client, body, field):
    resp = _search(client, **body)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["field"] == field


def test_a_variant_changes_fusion_for_that_request_only(client):
    q = "breathable mesh for daily road runs"
    default = _search(client, q=q).get_json()
    bm25_only = _search(client, q=q, variant={"fusion": "weighted", "bm25_weight": 1, "dense_weight": 0}).get_json()
    assert any(r["contributions"].get("dense") for r in default["results"])
    assert not any(r["contributions"].get("dense") for r in bm25_only["results"])
    assert _search(client, q=q).get_json()["results"] == default["results"]


def test_rerank_off_skips_the_reranker(shop, opensearch_url, tiny_reranker_bundle):
    app = create_app(_config(shop, opensearch_url, rerank_bundle=str(tiny_reranker_bundle)))
    client = app.test_client()
    on = _search(client, q="breathable mesh for daily road runs").get_json()
    off = _search(client, q="breathable mesh for daily road runs", variant={"rerank": False}).get_json()
    assert any(r["rerank_score"] is not None for r in on["results"])
    assert all(r["rerank_score"] is None for r in off["results"])
    assert app.extensions["osreco.services"].models.reranker is not None   # only that request


def test_user_endpoint(client):
    unknown = client.get("/playground/api/user?user_id=nobody-here").get_json()
    assert unknown["user_id"] == "nobody-here" and unknown["known"] is False and unknown["history"] == []
    for url in ("/playground/api/user", "/playground/api/user?user_id=", "/playground/api/user?user_id=a%01b"):
        resp = client.get(url)
        assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "user_id", url
