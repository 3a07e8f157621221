"""Export of tiny random models of every supported family, bad input, and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from osreco.exporter import BundleError, Encoder, ExportOptions, ModelDirError, ParityError, export_model, load_manifest
from osreco.exporter.manifest import FORMAT_VERSION, calibration_record


@pytest.mark.parametrize("family", ["distilbert", "roberta", "xlm-roberta", "mpnet"])
def test_families_export_with_fp32_parity(family, tiny_model_factory, tmp_path):
    manifest = export_model(tiny_model_factory(family), tmp_path / "b", ExportOptions())
    assert manifest.task == "embedding" and manifest.dim == 32 and manifest.precision == "fp32"
    assert manifest.parity["min_cosine"] >= 0.9999
    assert manifest.parity["top10_overlap"] == 1.0
    takes_types = "token_type_ids" in manifest.input_names
    assert takes_types is False  # none of these families has token types
    assert load_manifest(tmp_path / "b") == manifest


def test_tiny_bundle_layout_and_manifest(tiny_bundle):
    names = sorted(p.name for p in tiny_bundle.iterdir())
    assert {"model.onnx", "tokenizer.json", "manifest.json"} <= set(names)
    m = load_manifest(tiny_bundle)
    assert (m.format_version, m.model_name, m.pooling, m.normalize, m.max_length) == (
        FORMAT_VERSION, "tiny-bert", "mean", True, 128)
    assert set(m.files) == set(names) - {"manifest.json"}
    for key in ("min_cosine", "mean_cosine", "top10_overlap"):
        assert key in m.parity
    tok = json.loads((tiny_bundle / "tokenizer.json").read_text())
    assert tok["padding"] is None and tok["truncation"]["max_length"] == 128
    assert not list(tiny_bundle.parent.glob(".*tmp*"))


@pytest.mark.parametrize("family", ["bert-classifier", "roberta-classifier"])
def test_classifier_export_scores_pairs(family, tiny_model_factory, tmp_path):
    m = export_model(tiny_model_factory(family), tmp_path / "b", ExportOptions())
    assert m.task == "classification" and m.pooling is None and m.dim == 2
    assert m.parity["max_abs_diff"] < 1e-3 and m.parity["rank_agreement"] >= 0.99
    enc = Encoder(tmp_path / "b", threads=1)
    scores = enc.score_pairs([("q", "a relevant text"), ("q", "another"), ("", "")])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert enc.score_pairs([("q", "another")])[0] == pytest.approx(scores[1], abs=1e-5)


def test_pooling_and_normalize_overrides(tiny_model_factory, tmp_path):
    m = export_model(tiny_model_factory("bert"), tmp_path / "b",
                     ExportOptions(pooling="cls", normalize=False, max_length=16))
    assert (m.pooling, m.normalize, m.max_length) == ("cls", False, 16)
    vec = Encoder(tmp_path / "b", threads=1).encode_items(["a long text " * 20])
    assert abs(float(np.linalg.norm(vec)) - 1.0) > 1e-3


def test_failed_validation_leaves_nothing(tiny_model_factory, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ParityError) as e:
        export_model(tiny_model_factory("bert"), out, ExportOptions(quantize="int8", min_cosine=1.0))
    assert e.value.parity["min_cosine"] < 1.0
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_model_factory, tiny_bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    before = load_manifest(out)
    with pytest.raises(Exception, match="already exists"):
        export_model(tiny_model_factory("bert"), out, ExportOptions())
    m = export_model(tiny_model_factory("bert"), out, ExportOptions(overwrite=True, max_length=32))
    assert m.max_length == 32 and m.artifact_id != before.artifact_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_tampered_model_is_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    with open(bad / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match manifest.json") as e:
        Encoder(bad)
    assert str(bad / "model.onnx") in str(e.value)


def test_missing_tokenizer_in_bundle_is_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing") as e:
        Encoder(bad)
    assert "tokenizer.json" in str(e.value)


def test_newer_bundle_format_is_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    data = json.loads((bad / "manifest.json").read_text())
    data["format_version"] = FORMAT_VERSION + 1
    (bad / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer"):
        Encoder(bad)


def test_model_dir_without_tokenizer_is_refused(tiny_model_factory, tmp_path):
    src = tmp_path / "m"
    shutil.copytree(tiny_model_factory("bert"), src)
    for name in ("tokenizer.json", "vocab.txt"):
        (src / name).unlink()
    with pytest.raises(ModelDirError, match="no tokenizer"):
        export_model(src, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def _cli(args):
    from osreco.cli import cli

    return CliRunner().invoke(cli, args)


def test_cli_export_json_and_verify(tiny_model_factory, tmp_path):
    out = tmp_path / "b"
    result = _cli(["export", str(tiny_model_factory("bert")), "-o", str(out), "--json",
                   "--pooling", "max", "--no-normalize"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["ok"] and payload["pooling"] == "max" and payload["normalize"] is False
    assert "| min_cosine |" in result.stderr
    verify = _cli(["verify-bundle", str(out), "--json"])
    assert verify.exit_code == 0 and json.loads(verify.stdout)["artifact_id"] == payload["artifact_id"]


def test_cli_bad_input_exit_codes(tiny_model_factory, tmp_path):
    missing = _cli(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "b"), "--json"])
    assert missing.exit_code == 2
    assert json.loads(missing.stdout)["type"] == "ModelDirError"
    failed = _cli(["export", str(tiny_model_factory("bert")), "-o", str(tmp_path / "b"),
                   "--quantize", "int8", "--fp16"])
    assert failed.exit_code == 2 and "exclude each other" in failed.stderr
    assert not (tmp_path / "b").exists()
    bad_bundle = _cli(["verify-bundle", str(tmp_path)])
    assert bad_bundle.exit_code == 2 and "manifest.json" in bad_bundle.stderr


@pytest.mark.parametrize("options", [ExportOptions(optimize="O2"), ExportOptions(optimize="O1"),
                                     ExportOptions(fp16=True)])
def test_optimize_and_fp16_pass_their_gates(options, tiny_model_factory, tmp_path):
    m = export_model(tiny_model_factory("bert"), tmp_path / "b", options)
    assert (m.optimize, m.precision) == (options.optimize, options.precision)
    assert m.parity["min_cosine"] >= (0.9999 if options.precision == "fp32" else 0.99)


def test_int8_default_is_blockwise_and_the_manifest_records_the_scheme(tiny_model_factory, tmp_path):
    catalog = tuple(f"item {i}: a film about {w}" for i, w in enumerate("space toys war love ghosts boxing "
                                                                        "jazz whales chefs trains robots".split()))
    m = export_model(tiny_model_factory("bert"), tmp_path / "b", ExportOptions(quantize="int8", parity_catalog=catalog))
    assert m.quantization["scheme"] == "blockwise-int8" and m.quantization["calibration"] is None
    assert m.parity["n_catalog_docs"] == 11 and 0.0 <= m.parity["catalog_top10_overlap"] <= 1.0
    assert m.parity["min_cosine"] >= 0.99 and m.parity["top10_overlap"] >= 0.9
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and "DynamicQuantizeLinear" not in ops
    assert load_manifest(tmp_path / "b").quantization == m.quantization


def test_int8_block_option_quantizes_the_o2_graph_in_coarser_blocks(tiny_model_factory, tmp_path):
    import onnx

    result = _cli(["export", str(tiny_model_factory("bert")), "-o", str(tmp_path / "b"), "--json",
                   "--optimize", "O2", "--quantize", "int8", "--int8-block", "64"])
    assert result.exit_code == 0, result.output
    m = load_manifest(tmp_path / "b")
    assert (m.optimize, m.quantization["scheme"], m.quantization["block_size"]) == ("O2", "blockwise-int8", 64)
    assert m.parity["min_cosine"] >= 0.99 and m.parity["top10_overlap"] >= 0.9
    blocks = {a.i for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "block_size"}
    assert blocks == {64}
    refused = _cli(["export", str(tiny_model_factory("bert")), "-o", str(tmp_path / "c"), "--quantize", "int8",
                    "--int8-scheme", "dynamic", "--int8-block", "64"])
    assert refused.exit_code == 2 and "--int8-block" in refused.stderr and not (tmp_path / "c").exists()


def test_static_scheme_records_its_calibration_data(tiny_model_factory, tmp_path):
    calib = tmp_path / "catalog.jsonl"
    calib.write_text('{"title": "Toy Story", "text": "toys come alive"}\n{"title": "Heat"}\n', encoding="utf-8")
    result = _cli(["export", str(tiny_model_factory("bert")), "-o", str(tmp_path / "b"), "--json", "--quantize",
                   "int8", "--int8-scheme", "static", "--calibration", str(calib), "--min-cosine", "0.5"])
    assert result.exit_code == 0, result.output
    q = json.loads(result.stdout.strip().splitlines()[-1])["quantization"]
    assert q["scheme"] == "static-qdq-minmax"
    assert q["calibration"] == calibration_record(["Toy Story. toys come alive", "Heat"], str(calib))
    missing = _cli(["export", str(tiny_model_factory("bert")), "-o", str(tmp_path / "c"), "--quantize", "int8",
                    "--int8-scheme", "static"])
    assert missing.exit_code == 2 and "--calibration" in missing.stderr and not (tmp_path / "c").exists()
