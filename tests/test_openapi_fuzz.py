"""schemathesis against /openapi.json of the real sidecar (real node, API keys on): no 500s,
responses match the schema. Bounded: a few examples per operation.

``positive_data_acceptance`` is left out on purpose: cross-field limits (``page * k <= 1000``)
and whitespace-only text cannot be stated in OpenAPI 3.0, so some schema-valid requests get a
correct 400 naming the field.

Custom strategies add what a schema-driven fuzzer does not send (lone surrogates, deep nesting,
huge numbers, filter bounds outside the field's type): each is a 400 naming the field, never a
500 or a 502 that names the node's exception.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from test_sidecar_e2e import SHOP_FACETS

from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig
from osreco.plugin.security import append_key, create_key

pytestmark = pytest.mark.integration


def test_fuzz_every_operation_finds_no_server_errors(shop, opensearch_url, tmp_path):
    key, record = create_key("schemathesis")
    append_key(tmp_path / "keys.json", record)
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=shop.alias,
                           bundle_dir=shop.bundle, store_prefix=shop.prefix, facets=SHOP_FACETS,
                           api_keys_file=str(tmp_path / "keys.json"), hmac_key="k" * 32)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(config))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/search", "GET /v1/recommend", "POST /v1/events",
                                               "DELETE /v1/users/{user_id}", "GET /readyz"}
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers={"X-API-Key": key}, excluded_checks=[positive_data_acceptance])

        check()


# ---- inputs a schema-driven fuzzer does not produce: lone surrogates, deep nesting, huge numbers,
# filter bounds outside the field's type. Each is the client's 400 (or 413) naming the field. ----

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT_WITH_SURROGATE = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), SURROGATES, st.text(max_size=5))
HUGE = st.one_of(st.floats(min_value=3.5e38, max_value=1.7e308), st.floats(min_value=-1.7e308, max_value=-3.5e38),
                 st.integers(min_value=10**39, max_value=10**300))
OUT_OF_RANGE = st.one_of(
    st.tuples(st.sampled_from(["price", "popularity"]), st.sampled_from(["gte", "gt", "lte", "lt"]), HUGE),
    st.tuples(st.just("year"), st.sampled_from(["gte", "gt", "lte", "lt"]),
              st.one_of(HUGE, st.integers(min_value=2**31, max_value=2**62),
                        st.floats(min_value=2.2e9, max_value=1e300),
                        st.integers(min_value=-(2**62), max_value=-(2**31) - 1))))
EVENT = {"user_id": "fuzz-user", "item_id": "fuzz-item", "kind": "view"}


def _search_case(draw_field: str, value: object) -> tuple[str, dict, str]:
    body: dict = {"q": "shoes"}
    if draw_field.startswith("filters."):
        body["filters"] = {draw_field.split(".", 1)[1]: value}
    else:
        body[draw_field] = value
    return "/v1/search", body, draw_field


BAD_BODIES = st.one_of(
    st.builds(_search_case, st.sampled_from(["q", "user_id", "filters.brand", "filters.color"]), TEXT_WITH_SURROGATE),
    st.builds(lambda f, v: ("/v1/search", {"q": "x", "filters": {"brand": ["nike", v]}}, "filters.brand"),
              st.just(0), TEXT_WITH_SURROGATE),
    st.builds(lambda r: ("/v1/search", {"q": "shoes", "filters": {r[0]: {r[1]: r[2]}}}, f"filters.{r[0]}.{r[1]}"),
              OUT_OF_RANGE),
    st.builds(lambda f, v: ("/v1/events", {**EVENT, f: v}, f"event.{f}"),
              st.sampled_from(["user_id", "item_id", "query", "session_id"]), TEXT_WITH_SURROGATE),
    st.builds(lambda v: ("/v1/events", {**EVENT, "value": v}, "event.value"), HUGE),
)


def _app(shop, opensearch_url):
    config = SidecarConfig(opensearch=OpenSearchConfig(url=opensearch_url), alias=shop.alias, bundle_dir=shop.bundle,
                           store_prefix=shop.prefix, facets=SHOP_FACETS, dev_mode=True, embed_vocabulary=False,
                           bundle_reload_s=0)
    return create_app(config).test_client()


def _assert_clean_400(resp, field: str | None, status: int = 400) -> None:
    text = resp.get_data().decode("utf-8")   # valid UTF-8, never a traceback
    assert resp.status_code == status, text
    error = json.loads(text)["error"]
    if field is not None:
        assert error["field"] == field, text
    assert "exception" not in text.lower() and "Traceback" not in text


def test_hostile_json_is_a_400_naming_the_field_never_a_500_or_502(shop, opensearch_url):
    client = _app(shop, opensearch_url)

    @given(case=BAD_BODIES)
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        path, body, field = case
        resp = client.post(path, data=json.dumps(body), content_type="application/json")   # \ud800 escapes
        _assert_clean_400(resp, field)

    check()
    # bounds at the edge of each field's type pass validation and run on the node
    edge = {"price": {"lte": 3.4e38, "gte": -3.4e38}, "year": {"gte": -(2**31), "lte": 2**31 - 1}}
    resp = client.post("/v1/search", json={"q": "shoes", "filters": edge})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["shard_failures"] == []


def test_deep_nesting_and_not_utf8_urls_are_400s(shop, opensearch_url):
    client = _app(shop, opensearch_url)

    @given(depth=st.integers(min_value=33, max_value=10000), opener=st.sampled_from(["[", '{"q":']))
    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def nested(depth, opener):
        closer = "]" if opener == "[" else "}"
        resp = client.post("/v1/search", data=opener * depth + "1" + closer * depth, content_type="application/json")
        _assert_clean_400(resp, "body")

    @given(raw=st.binary(min_size=1, max_size=6).filter(lambda b: not _utf8(b)))
    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def not_utf8(raw):
        quoted = "".join(f"%{b:02X}" for b in raw)
        _assert_clean_400(client.get(f"/v1/recommend?user_id=u{quoted}"), "user_id")
        path = f"/v1/users/u{quoted}"
        as_a_server_passes_it = {"PATH_INFO": unquote_to_bytes(path).decode("latin-1")}
        _assert_clean_400(client.delete(path, environ_overrides=as_a_server_passes_it), "user_id")

    nested()
    not_utf8()


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

