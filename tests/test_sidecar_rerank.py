"""The cross-encoder reranker in the sidecar: order, scores, cost in the metrics, failure, config."""

from __future__ import annotations

import pytest
from test_sidecar_e2e import SHOP_FACETS, make_app

from osreco.exporter.encoder import Encoder
from osreco.ingest.connection import OpenSearchConfig
from osreco.plugin.app import create_app
from osreco.plugin.config import SidecarConfig
from osreco.plugin.errors import ConfigError

pytestmark = pytest.mark.integration
QUERY = "lightweight gear for the outdoors"   # free text only: 10+ candidates


def _search(app, q: str = QUERY, k: int = 10) -> dict:
    resp = app.test_client().post("/v1/search", json={"q": q, "k": k})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_reranker_reorders_the_fused_head_by_its_scores(shop, opensearch_url, tiny_reranker_bundle):
    fused = _search(make_app(shop, opensearch_url, facets=SHOP_FACETS))
    app = make_app(shop, opensearch_url, facets=SHOP_FACETS, rerank_bundle=str(tiny_reranker_bundle),
                   rerank_top_n=5)
    body = _search(app)
    service = app.extensions["osreco.services"]
    head = fused["results"][:5]
    assert len(head) == 5 and len(fused["results"]) > 5
    # the expected order, computed here from the cross-encoder's own scores of the fused top 5
    texts = [service.item_text(r["source"]) for r in head]
    assert all(texts) and texts[0].startswith(head[0]["title"])
    assert body["intent"]["text"]          # free text left: reranked, with the whole query as in training
    scores = Encoder(tiny_reranker_bundle, threads=1).score_pairs([(QUERY, t) for t in texts])
    expected = [r["item_id"] for _, r in sorted(zip(scores, head), key=lambda p: -float(p[0]))]
    assert expected != [r["item_id"] for r in head]     # the reranker really moves something here
    assert [r["item_id"] for r in body["results"][:5]] == expected
    for r in body["results"][:5]:
        assert r["rerank_score"] == pytest.approx(float(scores[[h["item_id"] for h in head].index(r["item_id"])]),
                                                  abs=1e-5)
    # candidates after the head keep the fused order and get no rerank score
    assert [r["item_id"] for r in body["results"][5:]] == [r["item_id"] for r in fused["results"][5:]]
    assert all(r["rerank_score"] is None for r in body["results"][5:])
    assert "rerank" in body["timings_ms"] and "rerank" not in fused["timings_ms"]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'osreco_stage_seconds_count{endpoint="/v1/search",stage="rerank"} 1.0' in metrics
    assert "osreco_rerank_candidates_sum 5.0" in metrics
    ready = app.test_client().get("/readyz").get_json()
    assert ready["reranker"] == Encoder(tiny_reranker_bundle, threads=1).artifact_id


def test_reranker_skips_a_query_with_no_text_left(shop, opensearch_url, tiny_reranker_bundle):
    app = make_app(shop, opensearch_url, facets=SHOP_FACETS, rerank_bundle=str(tiny_reranker_bundle))
    body = _search(app, q="red")       # all filter: nothing for a cross-encoder to read
    assert body["intent"]["text"] == "" and body["results"]
    assert all(r["rerank_score"] is None for r in body["results"]) and "rerank" not in body["timings_ms"]


def test_failing_reranker_keeps_the_fused_order_and_says_so(shop, opensearch_url, tiny_reranker_bundle):
    fused = _search(make_app(shop, opensearch_url, facets=SHOP_FACETS))
    app = make_app(shop, opensearch_url, facets=SHOP_FACETS, rerank_bundle=str(tiny_reranker_bundle))

    def broken(pairs, batch_size=32):
        raise RuntimeError("onnxruntime session lost")

    app.extensions["osreco.services"].models.reranker.score_pairs = broken
    body = _search(app)
    assert [d["kind"] for d in body["degradations"]] == ["reranker"]
    assert "onnxruntime session lost" in body["degradations"][0]["message"]
    assert [r["item_id"] for r in body["results"]] == [r["item_id"] for r in fused["results"]]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'osreco_degradations_total{kind="reranker"} 1.0' in metrics


def test_reranker_config_errors_name_the_setting(shop, opensearch_url, tiny_bundle, tmp_path):
    base = dict(opensearch=OpenSearchConfig(url=opensearch_url), alias=shop.alias, dev_mode=True,
                bundle_reload_s=0)
    with pytest.raises(ConfigError, match="no manifest.json") as e:
        SidecarConfig(rerank_bundle=str(tmp_path), **base)
    assert e.value.field == "OSRECO_RERANK_BUNDLE"
    with pytest.raises(ConfigError, match="1..1000") as e:
        SidecarConfig(rerank_top_n=0, **base)
    assert e.value.field == "OSRECO_RERANK_TOP_N"
    with pytest.raises(ConfigError, match="not a cross-encoder") as e:   # an embedding bundle
        create_app(SidecarConfig(rerank_bundle=str(tiny_bundle), **base))
    assert e.value.field == "OSRECO_RERANK_BUNDLE"
    env = {"OPENSEARCH_URL": opensearch_url, "OSRECO_DEV_MODE": "1", "OSRECO_RERANK_TOP_N": "twenty"}
    with pytest.raises(ConfigError, match="not an integer"):
        SidecarConfig.from_env(env)


def test_serve_cli_refuses_a_bad_reranker_with_exit_2(opensearch_url, tmp_path):
    from click.testing import CliRunner

    from osreco.cli import cli

    runner = CliRunner(env={"OPENSEARCH_URL": opensearch_url})
    result = runner.invoke(cli, ["serve", "--dev", "--rerank-bundle", str(tmp_path)])
    assert result.exit_code == 2
    assert "OSRECO_RERANK_BUNDLE" in result.output and "manifest.json" in result.output
    result = runner.invoke(cli, ["serve", "--dev", "--rerank-top-n", "0"])
    assert result.exit_code == 2 and "1<=x<=1000" in result.output
