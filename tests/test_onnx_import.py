"""`osreco export --from-onnx`: an ONNX encoder from a folder or an archive becomes a bundle."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from osreco.errors import ConfigError
from osreco.exporter import Encoder, ModelDirError, load_manifest
from osreco.exporter.manifest import sha256_file
from osreco.exporter.onnx_import import ImportOptions, import_onnx

_ST_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory, minilm_bundle, minilm_dir) -> Path:
    """An encoder 'exported by someone else': a bare ONNX graph, its tokenizer and the
    sentence-transformers config files (no osreco manifest)."""
    root = tmp_path_factory.mktemp("onnx-src") / "minilm-onnx"
    (root / "onnx").mkdir(parents=True)
    shutil.copyfile(minilm_bundle / "model.onnx", root / "onnx" / "model.onnx")
    shutil.copyfile(minilm_dir / "tokenizer.json", root / "tokenizer.json")
    for name in _ST_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(minilm_dir / name, root / name)
    return root


def _zip(path: Path, members: dict[str, Path]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, src in members.items():
            z.write(src, name)
    return path


def test_folder_import_detects_settings_and_reproduces_the_source(onnx_folder, minilm_bundle, tmp_path):
    m = import_onnx(onnx_folder, tmp_path / "b", ImportOptions(threads=1))
    assert (m.task, m.dim, m.pooling, m.normalize, m.precision) == ("embedding", 384, "mean", True, "fp32")
    assert m.max_length == 256  # sentence_bert_config.json, not the 512 positions of config.json
    assert m.model_type == "bert" and m.created_by == "osreco.exporter.onnx_import"
    assert m.parity["max_abs_diff"] <= 1e-5 and m.parity["min_cosine"] >= 0.9999
    assert m.parity["smoke_top1"] >= 0.5
    assert sha256_file(tmp_path / "b" / "model.onnx") == sha256_file(onnx_folder / "onnx" / "model.onnx")
    assert load_manifest(tmp_path / "b") == m and m.artifact_id.startswith("sha256:")
    texts = ["red running shoes", "一部关于太空的电影", ""]
    ours = Encoder(tmp_path / "b", threads=1).encode_items(texts)
    exported = Encoder(minilm_bundle, threads=1).encode_items(texts)
    assert np.abs(ours - exported).max() <= 1e-5


def test_archive_import_takes_options_where_files_are_silent(onnx_folder, tmp_path):
    jar = _zip(tmp_path / "encoder.jar", {"m/encoder.onnx": onnx_folder / "onnx" / "model.onnx",
                                          "m/encoder-tokenizer.json": onnx_folder / "tokenizer.json",
                                          "README": onnx_folder / "config.json"})
    with pytest.raises(ConfigError, match="pooling") as e:
        import_onnx(jar, tmp_path / "b", ImportOptions(threads=1))
    assert "encoder.jar" in str(e.value) and "--pooling" in (e.value.fix or "")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp*"))
    with pytest.raises(ConfigError, match="the index expects 512") as e:
        import_onnx(jar, tmp_path / "b", ImportOptions(pooling="mean", normalize=True, dim=512, threads=1))
    assert str(e.value).startswith(f"{jar}!/m/encoder.onnx")  # the member inside the archive, not a scratch copy
    m = import_onnx(jar, tmp_path / "b", ImportOptions(pooling="mean", normalize=True, max_length=128,
                                                      language="en", threads=1))
    assert (m.model_name, m.max_length, m.language, m.dim) == ("encoder", 128, "en", 384)
    tok = json.loads((tmp_path / "b" / "tokenizer.json").read_text(encoding="utf-8"))
    assert tok["padding"] is None and tok["truncation"]["max_length"] == 128


def test_an_encoder_that_cannot_retrieve_fails_the_smoke_test(tiny_bundle, tmp_path):
    from osreco.exporter import ParityError

    src = tmp_path / "src"
    src.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        shutil.copyfile(tiny_bundle / name, src / name)
    with pytest.raises(ParityError, match="retrieval smoke top-1") as e:
        import_onnx(src, tmp_path / "b", ImportOptions(pooling="mean", normalize=True, threads=1))
    assert e.value.parity["max_abs_diff"] <= 1e-5  # it reproduces its source; it just cannot retrieve
    assert "--pooling" in (e.value.fix or "") and not (tmp_path / "b").exists()


def test_int8_source_is_recorded_as_int8(onnx_folder, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = tmp_path / "src"
    shutil.copytree(onnx_folder, src)
    quantize_dynamic(onnx_folder / "onnx" / "model.onnx", src / "onnx" / "model.onnx",
                     weight_type=QuantType.QInt8)
    m = import_onnx(src, tmp_path / "b", ImportOptions(threads=1))
    assert m.precision == "int8" and m.parity["max_abs_diff"] <= 1e-5


def test_archive_without_tokenizer_names_the_file(onnx_folder, tmp_path):
    jar = _zip(tmp_path / "no-tok.jar", {"model.onnx": onnx_folder / "onnx" / "model.onnx"})
    with pytest.raises(ModelDirError, match="no tokenizer.json") as e:
        import_onnx(jar, tmp_path / "b")
    assert "no-tok.jar" in str(e.value) and "tokenizer.json" in (e.value.fix or "")


def _graph(path: Path, inputs: list[tuple[str, int]], out_rank: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    vin = [helper.make_tensor_value_info(n, t, ["b", "s"]) for n, t in inputs]
    shape = ["b", "s", 4][:out_rank] if out_rank == 3 else ["b", 4]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    nodes = [helper.make_node("Cast", [inputs[0][0]], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["c", "axes"], ["u"]),
             helper.make_node("Tile", ["u", "reps"], ["t"])]
    if out_rank == 2:
        nodes.append(helper.make_node("ReduceMean", ["t", "ax1"], ["out"], keepdims=0))
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["out"]))
    inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [2]),
             helper.make_tensor("reps", TensorProto.INT64, [3], [1, 1, 4]),
             helper.make_tensor("ax1", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "g", vin, [out], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.parametrize("inputs,rank,match", [
    ([("pixel_values", 1), ("attention_mask", 7)], 3, "unexpected graph inputs: pixel_values"),
    ([("input_ids", 7), ("attention_mask", 7)], 2, "unexpected graph outputs: out"),
])
def test_unexpected_graph_io_is_refused(inputs, rank, match, minilm_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _graph(src / "model.onnx", inputs, rank)
    shutil.copyfile(minilm_dir / "tokenizer.json", src / "tokenizer.json")
    with pytest.raises(ModelDirError, match=match) as e:
        import_onnx(src, tmp_path / "b", ImportOptions(pooling="mean", normalize=True))
    assert "model.onnx" in str(e.value) and e.value.fix


def test_dimension_disagreeing_with_the_index_is_refused(onnx_folder, tmp_path):
    with pytest.raises(ConfigError, match="dimension is 384, the index expects 512") as e:
        import_onnx(onnx_folder, tmp_path / "b", ImportOptions(dim=512))
    assert "model.onnx" in str(e.value) and "--rebuild" in (e.value.fix or "")


def test_cli_from_onnx(onnx_folder, tmp_path):
    from osreco.cli import cli

    runner = CliRunner()
    ok = runner.invoke(cli, ["export", "--from-onnx", str(onnx_folder), "-o", str(tmp_path / "b"),
                             "--threads", "1", "--language", "en", "--json"])
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.stdout.strip().splitlines()[-1])
    assert body["ok"] and body["dim"] == 384 and body["language"] == "en"
    bad = runner.invoke(cli, ["export", "--from-onnx", str(tmp_path / "missing.jar"), "-o", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "missing.jar" in bad.output and "fix:" in bad.output
    both = runner.invoke(cli, ["export", str(onnx_folder), "--from-onnx", str(onnx_folder), "-o", "x"])
    assert both.exit_code == 2 and "either MODEL_DIR or --from-onnx" in both.output
    quant = runner.invoke(cli, ["export", "--from-onnx", str(onnx_folder), "-o", "x", "--quantize", "int8"])
    assert quant.exit_code == 2 and "--from-onnx keeps the source graph" in quant.output


@pytest.mark.slow
def test_bge_zh_jar_imports_and_knows_chinese(bge_zh_bundle):
    m = load_manifest(bge_zh_bundle)
    assert (m.dim, m.pooling, m.normalize, m.precision, m.language) == (512, "cls", True, "fp32", "zh")
    assert m.parity["max_abs_diff"] <= 1e-5
    enc = Encoder(bge_zh_bundle, threads=1)
    q, shoes, dress = enc.encode_items(["红色跑鞋", "red running shoes", "blue dress"])
    assert float(q @ shoes) > float(q @ dress)
