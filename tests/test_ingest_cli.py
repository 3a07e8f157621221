"""`osreco ingest` and `osreco ingest pipeline install` against the real node: reports, exit
codes, schema files, --rebuild and the import boundary (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from opensearchpy import TransportError

from osreco.cli import cli
from osreco.ingest.fixtures import ECOMMERCE_QUERIES, ecommerce_catalog_path

pytestmark = pytest.mark.integration

ECOMMERCE_FLAGS = ["--facet", "brand", "--facet", "color", "--facet", "category", "--facet", "currency",
                   "--numeric", "price", "--numeric", "popularity", "--date", "release_date"]


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_ecommerce_catalog_loads_and_reloads(opensearch_url, os_client, index_name, tiny_bundle, tmp_path):
    base = ["ingest", str(ecommerce_catalog_path()), "--bundle", str(tiny_bundle), "--index", index_name,
            "--url", opensearch_url, "--threads", "1", "--checkpoint", str(tmp_path / "ck.json"),
            "--dead-letter", str(tmp_path / "dead.jsonl"), *ECOMMERCE_FLAGS]
    code, out = run([*base, "--json"])
    report = json.loads(out)
    assert (code, report["rows_read"], report["indexed"], report["dead_lettered"], report["ok"]) == (0, 50, 50, 0, True)
    assert report["index"] == f"{index_name}-v1" and report["alias"] == index_name
    assert not (tmp_path / "dead.jsonl").exists()
    code, out = run(base)
    assert code == 0 and out.startswith("50 rows: 0 indexed, 50 unchanged")
    case = ECOMMERCE_QUERIES[0]
    resp = os_client.search(index=index_name, body={"query": {"bool": {
        "must": {"match": {"title": "running shoes"}},
        "filter": [{"term": {"color": "red"}}, {"term": {"category": "running shoes"}},
                   {"range": {"price": {"lt": 50}}}],
        "must_not": [{"term": {"brand": "nike"}}]}}})
    assert [h["_id"] for h in resp["hits"]["hits"]] == [case.item_id]
    zh = os_client.search(index=index_name, body={"query": {"bool": {
        "must": {"match": {"title.cjk": "蓝牙耳机"}}, "filter": [{"range": {"price": {"lt": 500}}},
                                                              {"term": {"currency": "cny"}}]}}})
    assert zh["hits"]["hits"][0]["_id"] == ECOMMERCE_QUERIES[1].item_id
    code, out = run([*base, "--rebuild", "--json"])
    report = json.loads(out)
    assert (code, report["index"], report["embedded"], report["reused_vectors"]) == (0, f"{index_name}-v2", 0, 50)
    assert list(os_client.indices.get_alias(name=index_name)) == [f"{index_name}-v2"]


def test_schema_file_and_dead_letters_exit_1(opensearch_url, os_client, index_name, tiny_bundle, tmp_path):
    catalog = tmp_path / "c.csv"
    catalog.write_text("sku,name,cost,tags\na,Alpha,1.5,x|y\nb,Beta,oops,z\nc,Gamma,3,\n", encoding="utf-8")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"id": "sku", "title": "name", "text": [], "facets": {"genres": "tags"},
                                  "numeric": {"price": "cost"}}))
    code, out = run(["ingest", "load", str(catalog), "--bundle", str(tiny_bundle), "--index", index_name,
                     "--schema", str(schema), "--url", opensearch_url, "--dead-letter", str(tmp_path / "d.jsonl"),
                     "--checkpoint", str(tmp_path / "ck.json"), "--json"])
    report = json.loads(out)
    assert (code, report["indexed"], report["dead_lettered"]) == (1, 2, 1)
    dead = json.loads((tmp_path / "d.jsonl").read_text())
    assert (dead["line"], dead["field"], dead["source"]) == (3, "cost", str(catalog))
    assert os_client.get(index=index_name, id="a")["_source"]["genres"] == ["x", "y"]


def test_usage_errors_exit_2(opensearch_url, index_name, tiny_bundle, tmp_path):
    catalog = tmp_path / "c.jsonl"
    catalog.write_text('{"item_id": "a", "title": "A"}\n')
    bad_schema = tmp_path / "s.json"
    bad_schema.write_text('{"identifier": "sku"}')
    common = ["--bundle", str(tiny_bundle), "--url", opensearch_url]
    code, out = run(["ingest", str(catalog), *common, "--index", index_name, "--schema", str(bad_schema), "--json"])
    assert code == 2 and "unknown schema keys" in json.loads(out)["error"]
    code, _ = run(["ingest", str(catalog), *common, "--index", "Bad Name"])
    assert code == 2
    code, _ = run(["ingest", str(catalog), *common, "--index", index_name, "--numeric", "price:money"])
    assert code == 2
    code, out = run(["ingest", str(tmp_path / "missing.jsonl"), *common, "--index", index_name, "--json"])
    assert code == 2 and "does not exist" in json.loads(out)["error"]
    code, out = run(["ingest", "fixture:netflix", *common, "--index", index_name, "--json"])
    assert code == 2 and "fixture:movielens" in json.loads(out)["error"]


def test_movielens_fixture_through_the_cli(opensearch_url, os_client, index_name, tiny_bundle, tmp_path):
    code, out = run(["ingest", "fixture:movielens", "--bundle", str(tiny_bundle), "--index", index_name,
                     "--url", opensearch_url, "--dead-letter", str(tmp_path / "d.jsonl"),
                     "--checkpoint", str(tmp_path / "ck.json"), "--json"])
    report = json.loads(out)
    assert (code, report["rows_read"], report["indexed"], report["dead_lettered"]) == (1, 1682, 1681, 1)
    dead = json.loads((tmp_path / "d.jsonl").read_text())
    assert (dead["line"], dead["item_id"], dead["field"]) == (268, "267", "release_year")
    assert os_client.get(index=index_name, id="1412")["_source"]["year"] == 1995  # repaired, not dead-lettered


def test_index_built_for_another_bundle_is_refused(opensearch_url, os_client, index_name, tiny_bundle, tmp_path):
    catalog = tmp_path / "c.jsonl"
    catalog.write_text('{"item_id": "a", "title": "A"}\n')
    os_client.indices.create(index=f"{index_name}-v1", body={"aliases": {index_name: {}}, "mappings": {
        "_meta": {"artifact_id": "sha256:other", "dim": 32}}})
    code, out = run(["ingest", str(catalog), "--bundle", str(tiny_bundle), "--index", index_name,
                     "--url", opensearch_url, "--checkpoint", str(tmp_path / "ck.json"), "--json"])
    assert code == 2 and "--rebuild" in json.loads(out)["error"]


def test_pipeline_install_normalizes_facets(opensearch_url, os_client, index_name):
    name = f"{index_name}-pipeline"
    try:
        code, out = run(["ingest", "pipeline", "install", "--name", name, "--facet", "brand", "--facet", "genres",
                         "--default", "popularity=0.5", "--url", opensearch_url, "--json"])
        assert code == 0 and json.loads(out)["name"] == name
        sim = os_client.ingest.simulate(id=name, body={"docs": [{"_id": "9", "_source": {
            "title": "X", "brand": "  ACME ", "genres": [" Action", "Sci-Fi "]}}]})
        source = sim["docs"][0]["doc"]["_source"]
        assert (source["item_id"], source["brand"], source["genres"], source["popularity"]) == (
            "9", "acme", ["action", "sci-fi"], 0.5)
        assert source["indexed_at"]
    finally:
        os_client.ingest.delete_pipeline(id=name, ignore=[404])


def test_ingest_never_imports_torch():
    code = ("import sys, osreco.ingest, osreco.ingest.cli, osreco.ingest.writer, osreco.ingest.rebuild;"
            "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_texts():
    code, out = run(["ingest", "--help"])
    assert code == 0 and "osreco ingest CATALOG" in out
    code, out = run(["ingest", "load", "--help"])
    assert code == 0 and "--rebuild" in out and "--dead-letter" in out
    assert Path(ecommerce_catalog_path()).exists()


def test_pipeline_with_text_embedding_is_accepted_by_neural_search(opensearch_url, os_client, index_name):
    """The node accepts the text_embedding processor; documents that bring a vector skip it, and
    a document without one calls the (missing) model and fails, as a neural query on it does.

    The failure's wording depends on the node's ml-commons state (a node that never registered a
    model answers "Fail to find model" without the id), so only its kind is checked.
    (Deploying a local model cannot be exercised offline: ml-commons 3.6's DJL runtime tries to
    download libtorch, see tests/test_mlcommons.py.)"""
    name = f"{index_name}-embed"
    model_id = f"not-deployed-{uuid.uuid4().hex[:12]}"
    try:
        code, out = run(["ingest", "pipeline", "install", "--name", name, "--model-id", model_id,
                         "--url", opensearch_url, "--json"])
        assert code == 0, out
        processors = os_client.ingest.get_pipeline(id=name)[name]["processors"]
        assert {"text_embedding"} <= {next(iter(p)) for p in processors}
        assert [p["text_embedding"]["model_id"] for p in processors if "text_embedding" in p] == [model_id]
        sim = os_client.ingest.simulate(id=name, body={"docs": [{"_id": "1", "_source": {
            "title": "Toy Story", "brand": "Pixar ", "embedding": [0.1, 0.2]}}]})
        assert "error" not in sim["docs"][0]
        source = sim["docs"][0]["doc"]["_source"]
        assert (source["embedding"], source["brand"]) == ([0.1, 0.2], "pixar")
        assert "_osreco_embed_text" not in source
        missing = os_client.ingest.simulate(id=name, body={"docs": [{"_id": "2", "_source": {"title": "Up"}}]})
        failed = missing["docs"][0]  # without a vector the model is called, and it does not exist
        assert "doc" not in failed and "model" in failed["error"]["reason"].lower(), failed

        os_client.indices.create(index=index_name, body={"settings": {"index": {"knn": True}}, "mappings": {
            "properties": {"embedding": {"type": "knn_vector", "dimension": 2}}}})
        with pytest.raises(TransportError) as e:
            os_client.search(index=index_name, body={"query": {"neural": {"embedding": {
                "query_text": "Up", "model_id": model_id, "k": 5}}}})
        assert e.value.status_code in (400, 404) and "model" in json.dumps(e.value.info).lower(), e.value.info
    finally:
        os_client.ingest.delete_pipeline(id=name, ignore=[404])
