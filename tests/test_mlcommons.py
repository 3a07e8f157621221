"""ml-commons packaging, and registration/deployment on the real node."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from osreco.exporter import Encoder, ExportOptions, export_model, load_manifest
from osreco.exporter.errors import MLCommonsError
from osreco.exporter.manifest import sha256_file
from osreco.exporter.mlcommons import ML_SETTINGS, check_zip, register_and_deploy, register_body, write_ml_commons

# Evidence (node log, 2026-11-27, ml-commons 3.6.0): deploy fails in DJL's OrtNDManager, which
# loads PyTorch as the "alternative engine" for NDArray maths and tries to download libtorch:
# "java.net.UnknownHostException: publish.djl.ai". The task error reads {"<node>":"publish.djl.ai"}
# the first time and "EngineException: Failed to save pytorch index file" on later tries
# (both thrown by ai.djl.pytorch.jni.LibUtils.downloadPyTorch).
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


@pytest.mark.integration
def test_register_deploy_predict_on_node(os_client, minilm_bundle):
    """Register the MiniLM zip by file:// URL; deploy and compare with the Encoder if DJL loads."""
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
        model = os_client.transport.perform_request("GET", f"/_plugins/_ml/models/{model_id}")
        assert model["model_content_hash_value"] == body["model_content_hash_value"]
        assert model["model_config"]["embedding_dimension"] == 384
        if deploy["state"] != "COMPLETED":
            assert any(e in json.dumps(deploy.get("error")) for e in OFFLINE_DJL_ERRORS), deploy
            warnings.warn(f"ml-commons deploy failed offline as documented: {deploy.get('error')}", stacklevel=2)
            return
        texts = ["red running shoes", "像玩具总动员那样适合孩子的电影"]
        out = os_client.transport.perform_request(
            "POST", f"/_plugins/_ml/_predict/text_embedding/{model_id}", body={"text_docs": texts})
        got = np.array([r["output"][0]["data"] for r in out["inference_results"]], dtype=np.float32)
        ref = Encoder(minilm_bundle, threads=1).encode_items(texts)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.999
    finally:
        os_client.transport.perform_request("POST", f"/_plugins/_ml/models/{model_id}/_undeploy")
        os_client.transport.perform_request("DELETE", f"/_plugins/_ml/models/{model_id}")
        shutil.rmtree(share, ignore_errors=True)
