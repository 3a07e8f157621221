"""Named encoders end to end: items get `embedding` (English MiniLM) and `embedding_zh` (bge-small-zh,
imported from its Maven jar); a Chinese free-text query is embedded by the Chinese encoder."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from osreco.ingest.connection import OpenSearchConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# "make an espresso in the morning": only meaning can answer it. No item says 浓缩咖啡 (the espresso
# machine's title and text are English) and the parser turns none of it into a filter.
ZH_QUERY = "早上做一杯浓缩咖啡"
ZH_ANSWER = "coffee-delonghi"


def _ingest(url: str, index: str, bundle, *extra: str):
    from osreco.cli import cli

    return CliRunner().invoke(cli, ["ingest", "load", "fixture:ecommerce", "--bundle", str(bundle), "--index", index,
                                    "--url", url, "--checkpoint", f"/tmp/.{index}.ckpt",
                                    "--dead-letter", f"/tmp/{index}.dead.jsonl", "--json", *extra])


@pytest.fixture(scope="module")
def zh_index(os_client, opensearch_url, minilm_bundle, bge_zh_bundle):
    import uuid

    alias = f"t-zh-{uuid.uuid4().hex[:8]}"
    result = _ingest(opensearch_url, alias, minilm_bundle, "--bundle-zh", str(bge_zh_bundle))
    assert result.exit_code == 0, result.output
    yield alias
    os_client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                             expand_wildcards="all")


def _search(url: str, alias: str, bundle, bundle_zh, q: str) -> dict:
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig

    config = SidecarConfig(opensearch=OpenSearchConfig(url=url), alias=alias, dev_mode=True, bundle_dir=str(bundle),
                           bundle_zh_dir=str(bundle_zh) if bundle_zh else None, bundle_reload_s=0,
                           embed_vocabulary=False)
    resp = create_app(config).test_client().post("/v1/search", json={"q": q, "k": 5})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_items_get_one_vector_per_encoder(os_client, zh_index, bge_zh_bundle):
    from osreco.exporter import load_manifest

    index = next(iter(os_client.indices.get_alias(name=zh_index)))
    mapping = os_client.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["properties"]["embedding"]["dimension"] == 384
    assert mapping["properties"]["embedding_zh"]["dimension"] == 512
    zh = mapping["_meta"]["encoders"]["zh"]
    assert zh["artifact_id"] == load_manifest(bge_zh_bundle).artifact_id and zh["language"] == "zh"
    doc = os_client.get(index=zh_index, id=ZH_ANSWER)["_source"]
    assert len(doc["embedding"]) == 384 and len(doc["embedding_zh"]) == 512


def test_chinese_free_text_is_answered_by_the_chinese_encoder(opensearch_url, zh_index, minilm_bundle, bge_zh_bundle):
    body = _search(opensearch_url, zh_index, minilm_bundle, bge_zh_bundle, ZH_QUERY)
    assert body["intent"]["language"] == "zh" and not body["intent"]["filters"] and not body["degradations"]
    assert body["results"][0]["item_id"] == ZH_ANSWER
    # the English encoder alone cannot: the same query on `embedding` misses the machine
    english_only = _search(opensearch_url, zh_index, minilm_bundle, None, ZH_QUERY)
    assert ZH_ANSWER not in [r["item_id"] for r in english_only["results"][:1]]
    # an English query still goes to the English encoder and finds the machine
    english = _search(opensearch_url, zh_index, minilm_bundle, bge_zh_bundle, "a machine that makes espresso")
    assert english["results"][0]["item_id"] == ZH_ANSWER


def test_a_load_that_disagrees_with_the_index_is_refused(opensearch_url, zh_index, minilm_bundle, os_client):
    # a "Chinese" bundle of another dimension (384 vs the index's 512)
    wrong = _ingest(opensearch_url, zh_index, minilm_bundle, "--bundle-zh", str(minilm_bundle))
    assert wrong.exit_code == 2 and "embedding_zh" in wrong.output and "--rebuild" in wrong.output
    # no Chinese bundle at all: the new vectors would be missing
    missing = _ingest(opensearch_url, zh_index, minilm_bundle)
    assert missing.exit_code == 2 and "--bundle-zh" in missing.output
