"""Pure parts of the exporter, tested by exact value (no model, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osreco.exporter import ConfigError, ExportOptions, Manifest
from osreco.exporter.encoder import l2_normalize, length_buckets, logits_to_scores, pool
from osreco.exporter.errors import BundleError, ModelDirError, ParityError
from osreco.exporter.manifest import FORMAT_VERSION, compute_artifact_id, load_manifest
from osreco.exporter.modeldir import inspect_model_dir
from osreco.exporter.validate import Thresholds, check_parity, cosine_rows, rank_agreement, topk_overlap

HIDDEN = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]], dtype=np.float32)
MASK = np.array([[1, 1, 0]])


def test_mean_pooling_ignores_padding():
    assert pool(HIDDEN, MASK, "mean").tolist() == [[2.0, 3.0]]


def test_cls_pooling_takes_first_token():
    assert pool(HIDDEN, MASK, "cls").tolist() == [[1.0, 2.0]]


def test_max_pooling_ignores_padding():
    assert pool(HIDDEN, MASK, "max").tolist() == [[3.0, 4.0]]


def test_unknown_pooling_is_a_config_error():
    with pytest.raises(ConfigError):
        pool(HIDDEN, MASK, "median")


def test_l2_normalize_rows_and_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert out.tolist() == [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    assert out.dtype == np.float32


def test_length_buckets_longest_first_and_cover_every_index():
    buckets = length_buckets([3, 10, 1, 7, 7], batch_size=2)
    assert [b.tolist() for b in buckets] == [[1, 3], [4, 0], [2]]


def test_logits_to_scores():
    assert logits_to_scores(np.array([[0.5], [-1.0]])).tolist() == [0.5, -1.0]
    assert logits_to_scores(np.array([[1.0, 3.0]])).tolist() == [2.0]
    three = logits_to_scores(np.array([[0.0, 0.0, 0.0]]))
    assert three.tolist() == [pytest.approx(-np.log(3.0))]


def test_cosine_rows_and_overlap_and_rank_agreement():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0]])
    assert cosine_rows(a, b).tolist() == [1.0, 1.0]
    q = np.array([[1.0, 0.0]])
    d = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert topk_overlap(q, d, q, d[[0, 2, 1]], k=2) == 0.5
    assert rank_agreement(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == 2 / 3


def test_check_parity_names_each_failure():
    t = Thresholds.for_precision("int8")
    with pytest.raises(ParityError) as e:
        check_parity({"min_cosine": 0.95, "top10_overlap": 0.5}, "int8", t, "/b")
    assert "min cosine 0.950000 < 0.99" in str(e.value) and "top-10 overlap 0.500 < 0.9" in str(e.value)
    check_parity({"min_cosine": 0.99999, "top10_overlap": 0.5}, "fp32", Thresholds.for_precision("fp32"), "/b")


def test_artifact_id_is_order_independent_content_hash():
    a = compute_artifact_id({"model.onnx": "aa", "tokenizer.json": "bb"})
    assert a == compute_artifact_id({"tokenizer.json": "bb", "model.onnx": "aa"})
    assert a != compute_artifact_id({"model.onnx": "ab", "tokenizer.json": "bb"})
    assert a.startswith("sha256:") and len(a) == 7 + 64


@pytest.mark.parametrize("kwargs", [{"optimize": "O4"}, {"quantize": "int4"},
                                    {"quantize": "int8", "fp16": True}, {"pooling": "sum"},
                                    {"max_length": 1}, {"min_cosine": 1.5}, {"threads": 0},
                                    {"ml_commons": True, "optimize": "O2"}, {"int8_scope": "ffn"},
                                    {"int8_scheme": "qat"}, {"quantize": "int8", "int8_scheme": "static"},
                                    {"quantize": "int8", "ml_commons": True}, {"int8_block": 48},
                                    {"quantize": "int8", "int8_scheme": "dynamic", "int8_block": 64}])
def test_export_options_reject_bad_values(kwargs):
    with pytest.raises(ConfigError):
        ExportOptions(**kwargs)


def test_export_options_precision():
    assert ExportOptions().precision == "fp32"
    assert ExportOptions(quantize="int8").precision == "int8"
    assert ExportOptions(fp16=True).precision == "fp16"


def _manifest_dir(tmp_path, **over):
    data = Manifest(model_name="m", task="embedding", dim=4, pooling="mean", normalize=True,
                    max_length=8, opset=17, precision="fp32").to_dict()
    data.update(over)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return tmp_path


def test_newer_format_version_is_refused(tmp_path):
    d = _manifest_dir(tmp_path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match="newer") as e:
        load_manifest(d, verify=False)
    assert "manifest.json" in str(e.value)


def test_invalid_manifest_field_is_refused(tmp_path):
    with pytest.raises(BundleError, match="pooling"):
        load_manifest(_manifest_dir(tmp_path, pooling="sum"), verify=False)


def test_missing_bundle_and_manifest(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_manifest(tmp_path)


def _model_dir(tmp_path, config, files=("vocab.txt",), modules=None, pooling=None):
    (tmp_path / "config.json").write_text(json.dumps(config))
    for f in files:
        (tmp_path / f).write_text("x")
    if modules is not None:
        (tmp_path / "modules.json").write_text(json.dumps(modules))
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return tmp_path


def test_inspect_reads_sentence_transformers_pooling(tmp_path):
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    d = _model_dir(tmp_path, {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 8,
                              "max_position_embeddings": 64}, modules=modules,
                   pooling={"pooling_mode_cls_token": True})
    info = inspect_model_dir(d)
    assert (info.task, info.pooling, info.normalize, info.dim, info.max_length) == ("embedding", "cls", False, 8, 64)


def test_inspect_plain_roberta_defaults_and_classifier(tmp_path):
    d = _model_dir(tmp_path, {"model_type": "roberta", "architectures": ["RobertaForSequenceClassification"],
                              "hidden_size": 8, "max_position_embeddings": 514, "pad_token_id": 1,
                              "id2label": {"0": "no", "1": "yes"}}, files=("tokenizer.json",))
    info = inspect_model_dir(d)
    assert (info.task, info.pooling, info.dim, info.labels, info.max_length) == (
        "classification", None, 2, ("no", "yes"), 512)


def test_inspect_errors_name_the_file(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        inspect_model_dir(tmp_path / "missing")
    with pytest.raises(ModelDirError, match="config.json"):
        inspect_model_dir(tmp_path)
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    with pytest.raises(ModelDirError, match="unsupported model_type 'gpt2'") as e:
        inspect_model_dir(_model_dir(gpt, {"model_type": "gpt2"}))
    assert str(gpt / "config.json") in str(e.value)
    qa = tmp_path / "qa"
    qa.mkdir()
    with pytest.raises(ModelDirError, match="unsupported architecture"):
        inspect_model_dir(_model_dir(qa, {"model_type": "bert", "architectures": ["BertForQuestionAnswering"]}))
    notok = tmp_path / "notok"
    notok.mkdir()
    with pytest.raises(ModelDirError, match="no tokenizer"):
        inspect_model_dir(_model_dir(notok, {"model_type": "bert"}, files=()))


def test_calibration_record_names_source_count_and_a_hash_of_the_texts_in_order():
    import hashlib

    from osreco.exporter.manifest import calibration_record

    rec = calibration_record(["red shoes", "a space film"], "catalog.jsonl")
    assert rec == {"source": "catalog.jsonl", "n_texts": 2,
                   "sha256": hashlib.sha256(b"red shoes\na space film").hexdigest()}
    assert calibration_record(["a space film", "red shoes"], "catalog.jsonl")["sha256"] != rec["sha256"]


def test_manifest_round_trips_the_quantization_record():
    m = Manifest(model_name="m", task="embedding", dim=4, pooling="mean", normalize=True, max_length=8,
                 opset=17, precision="int8", quantization={"scheme": "blockwise-int8", "calibration": None})
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))).quantization == m.quantization


def test_cli_calibration_file_reads_lines_or_jsonl_title_and_text(tmp_path):
    from osreco.exporter.cli import _calibration

    lines = tmp_path / "c.txt"
    lines.write_text("red shoes\n\n  a space film \n", encoding="utf-8")
    assert _calibration(lines) == {"calibration": ("red shoes", "a space film"), "calibration_source": str(lines)}
    rows = tmp_path / "c.jsonl"
    rows.write_text('{"title": "Toy Story", "text": "toys"}\n{"title": "Heat"}\n', encoding="utf-8")
    assert _calibration(rows)["calibration"] == ("Toy Story. toys", "Heat")
    (tmp_path / "bad.jsonl").write_text('{"title": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        _calibration(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no text"):
        _calibration(tmp_path / "empty.txt")
