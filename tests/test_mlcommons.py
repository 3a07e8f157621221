"""ml-commons packaging, and registration/deployment on the real node."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from osreco.exporter import Encoder, ExportOptions, export_model, load_manifest
from osreco.exporter.errors import MLCommonsError
from osreco.exporter.manifest import sha256_file
from osreco.exporter.mlcommons import ML_SETTINGS, check_zip, register_and_deploy, register_body, write_ml_commons
from osreco.ingest.catalog import read_catalog
from osreco.ingest.errors import RowError
from osreco.ingest.fixtures import ECOMMERCE_FIELDS, ecommerce_catalog_path
from osreco.ingest.index_spec import IndexSpec
from osreco.ingest.pipeline import install_pipeline, pipeline_body
from osreco.ingest.writer import WriteConfig, index_items

# Offline deploy: DJL's OrtNDManager loads PyTorch as the "alternative engine" for NDArray maths,
# and ai.djl.pytorch.jni.LibUtils.downloadPyTorch fetches libtorch ("UnknownHostException:
# publish.djl.ai") unless it is in DJL's engine cache. osreco.node fills that cache from Maven
# (LocalNode.djl_engine_cache) and passes ENGINE_CACHE_DIR; a node without it fails here.
OFFLINE_DJL_ERRORS = ("publish.djl.ai", "Failed to save pytorch index file")


def test_zip_layout_and_register_body(tiny_bundle, tmp_path):
    body = write_ml_commons(tiny_bundle, tmp_path, load_manifest(tiny_bundle))
    zip_path = tmp_path / "model.zip"
    assert sorted(check_zip(zip_path)) == ["model.onnx", "tokenizer.json"]
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.read("model.onnx") == (tiny_bundle / "model.onnx").read_bytes()
    assert body["model_content_hash_value"] == sha256_file(zip_path)
    assert body["model_format"] == "ONNX" and body["function_name"] == "TEXT_EMBEDDING"
    cfg = body["model_config"]
    assert (cfg["model_type"], cfg["embedding_dimension"], cfg["pooling_mode"], cfg["normalize_result"],
            cfg["framework_type"], cfg["model_max_length"]) == ("bert", 32, "MEAN", True,
                                                                "sentence_transformers", 128)
    assert json.loads(cfg["all_config"])["osreco_artifact_id"] == load_manifest(tiny_bundle).artifact_id
    assert json.loads((tmp_path / "register.json").read_text()) == body


def test_model_type_follows_token_type_input(tiny_model_factory, tmp_path):
    export_model(tiny_model_factory("roberta"), tmp_path / "b", ExportOptions(ml_commons=True))
    body = json.loads((tmp_path / "b" / "ml-commons" / "register.json").read_text())
    assert body["model_config"]["model_type"] == "roberta"
    check_zip(tmp_path / "b" / "ml-commons" / "model.zip")


def test_classifier_and_bad_zip_are_refused(tiny_model_factory, tiny_bundle, tmp_path):
    m = export_model(tiny_model_factory("bert-classifier"), tmp_path / "c", ExportOptions())
    with pytest.raises(MLCommonsError, match="embedding bundle"):
        register_body(m, "0" * 64, 1)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.write(tiny_bundle / "model.onnx", arcname="sub/model.onnx")
        zf.write(tiny_bundle / "tokenizer.json", arcname="tokenizer.json")
    with pytest.raises(MLCommonsError, match="exactly one .onnx"):
        check_zip(bad)


@pytest.fixture(scope="module")
def deployed_minilm(os_client, minilm_bundle):
    """The MiniLM zip registered by file:// URL and deployed on the node (undeployed after)."""
    share = Path(tempfile.mkdtemp(prefix="osreco-mlc-", dir="/tmp"))
    os.chmod(share, 0o755)
    body = write_ml_commons(minilm_bundle, share, load_manifest(minilm_bundle))
    os.chmod(share / "model.zip", 0o644)
    assert stat.S_IMODE((share / "model.zip").stat().st_mode) == 0o644
    body["url"] = f"file://{share}/model.zip"
    body["name"] = f"osreco-test-{share.name}"
    os_client.cluster.put_settings(body={"transient": ML_SETTINGS})
    model_id, deploy = register_and_deploy(os_client, body)
    try:
        offline = any(e in json.dumps(deploy.get("error")) for e in OFFLINE_DJL_ERRORS)
        assert deploy["state"] == "COMPLETED", (
            f"deploy failed{' (DJL tried to download libtorch: the node lacks ENGINE_CACHE_DIR)' if offline else ''}:"
            f" {deploy.get('error')}")
        yield model_id, body
    finally:
        os_client.transport.perform_request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy")
        os_client.transport.perform_request("DELETE", f"/_plugins/_ml/models/{model_id}")
        shutil.rmtree(share, ignore_errors=True)


@pytest.mark.integration
def test_register_deploy_predict_on_node(os_client, minilm_bundle, deployed_minilm):
    """Deployed offline, the in-cluster model embeds as the bundle's Encoder does."""
    model_id, body = deployed_minilm
    model = os_client.transport.perform_request("GET", f"/_plugins/_ml/models/{model_id}")
    assert model["model_content_hash_value"] == body["model_content_hash_value"]
    assert model["model_config"]["embedding_dimension"] == 384
    texts = ["red running shoes", "像玩具总动员那样适合孩子的电影"]
    out = os_client.transport.perform_request(
        "POST", f"/_plugins/_ml/_predict/text_embedding/{model_id}", body={"text_docs": texts})
    got = np.array([r["output"][0]["data"] for r in out["inference_results"]], dtype=np.float32)
    ref = Encoder(minilm_bundle, threads=1).encode_items(texts)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999


QUERIES = ("red running shoes", "waterproof jacket for hiking", "cheap laptop for students", "silk evening dress",
           "wireless noise cancelling headphones")


@pytest.mark.integration
@pytest.mark.slow
def test_pipeline_and_neural_query_match_the_sidecar_path(os_client, minilm_bundle, deployed_minilm, index_name):
    """Items embedded by the ingest pipeline and queries by ``neural`` give the neighbours that
    ``osreco ingest`` vectors and the sidecar's embed + kNN give."""
    model_id, _ = deployed_minilm
    encoder = Encoder(minilm_bundle, threads=1)
    fields = replace(ECOMMERCE_FIELDS, embed_fields=("title", "text"))  # the pipeline joins these two
    items = [e for e in read_catalog(ecommerce_catalog_path(), fields) if not isinstance(e, RowError)]
    spec = IndexSpec.from_encoder(encoder, index_name)
    ours, cluster = f"{index_name}-osreco", f"{index_name}-cluster"
    for name in (ours, cluster):
        os_client.indices.create(index=name, body=spec.index_body())
    report = index_items(os_client, encoder, ours, iter(items), WriteConfig())
    assert report.ok and report.indexed == len(items)
    pipeline = f"{index_name}-pipeline"
    install_pipeline(os_client, pipeline, pipeline_body(spec.facets, model_id=model_id), default_for=cluster)
    try:
        bulk = "".join(json.dumps({"index": {"_index": cluster, "_id": i.item_id}}) + "\n" + json.dumps(i.fields) + "\n"
                       for i in items)
        out = os_client.bulk(body=bulk, refresh=True)
        assert not out["errors"], [x for x in out["items"] if "error" in x["index"]][:2]
        os_client.indices.refresh(index=ours)
        docs = {h["_id"]: h["_source"] for h in os_client.search(
            index=cluster, body={"size": 100, "_source": ["embedding"], "query": {"match_all": {}}})["hits"]["hits"]}
        assert len(docs) == len(items)
        got = np.array([docs[i.item_id]["embedding"] for i in items], dtype=np.float32)
        ref = encoder.encode_items([i.embed_text for i in items])
        assert ((got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)).min() >= 0.999
        for q in QUERIES:
            vector = encoder.encode_queries([q])[0].tolist()
            sidecar = os_client.search(index=ours, body={"size": 10, "_source": False,
                                                         "query": {"knn": {"embedding": {"vector": vector, "k": 10}}}})
            neural = os_client.search(index=cluster, body={"size": 10, "_source": False, "query": {
                "neural": {"embedding": {"query_text": q, "model_id": model_id, "k": 10}}}})
            assert [h["_id"] for h in neural["hits"]["hits"]] == [h["_id"] for h in sidecar["hits"]["hits"]], q
            assert np.allclose([h["_score"] for h in neural["hits"]["hits"]],
                               [h["_score"] for h in sidecar["hits"]["hits"]], atol=1e-4), q
    finally:
        os_client.ingest.delete_pipeline(id=pipeline, ignore=[404])
