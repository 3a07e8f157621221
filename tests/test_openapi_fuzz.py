"""schemathesis against /openapi.json of the real sidecar (real node, API keys on): no 500s,
responses match the schema. Bounded: a few examples per operation.

``positive_data_acceptance`` is left out on purpose: cross-field limits (``page * k <= 1000``)
and whitespace-only text cannot be stated in OpenAPI 3.0, so some schema-valid requests get a
correct 400 naming the field.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
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
