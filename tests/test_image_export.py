"""Image–text bundles: export (two towers, one manifest, parity incl. images), the torch-free
image runtime, safe image decoding, and clear start-up errors for bundles without an image tower."""

from __future__ import annotations

import io
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from osreco.exporter import BundleError, ConfigError, Encoder, ExportOptions, export_model
from osreco.exporter.errors import ImageInputError
from osreco.exporter.image import ImagePreprocessor, decode_image
from osreco.exporter.image_export import parity_images


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory, minilm_dir) -> Path:
    from osreco.training.image_text import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "model", minilm_dir)


@pytest.fixture(scope="session")
def clip_bundle(tmp_path_factory, tiny_clip_dir) -> Path:
    out = tmp_path_factory.mktemp("tiny-clip-bundle") / "bundle"
    export_model(tiny_clip_dir, out, ExportOptions(model_name="tiny-clip"), report=lambda *_: None)
    return out


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_clip_export_is_one_bundle_with_two_towers_and_image_parity(clip_bundle):
    manifest = json.loads((clip_bundle / "manifest.json").read_text())
    assert manifest["image"]["model"] == "image.onnx" and manifest["image"]["family"] == "clip"
    assert {"model.onnx", "image.onnx", "preprocessor.json", "tokenizer.json"} <= set(manifest["files"])
    parity = manifest["parity"]
    assert parity["image_min_cosine"] >= 0.9999 and parity["min_cosine"] >= 0.9999
    assert parity["n_images"] == len(parity_images())
    enc = Encoder(clip_bundle, threads=1)
    assert enc.has_images
    vecs = enc.encode_images(parity_images())
    assert vecs.shape == (len(parity_images()), enc.dim)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # text and images live in one space: the text tower is the bundle's ordinary text encoder
    assert enc.encode_queries(["a red circle"]).shape == (1, enc.dim)


def test_runtime_preprocessing_matches_the_hf_processor(tiny_clip_dir):
    from transformers import AutoImageProcessor

    hf = AutoImageProcessor.from_pretrained(str(tiny_clip_dir))
    ours = ImagePreprocessor.from_hf_config(hf.to_dict())
    images = parity_images()
    expected = hf(images=images, return_tensors="np")["pixel_values"]
    assert np.abs(ours(images) - expected).max() < 1e-4


def test_vision_text_dual_encoder_exports(tmp_path, minilm_dir):
    """Any vision tower + any text tower (here a CLIP ViT + a tiny BERT) exports the same way."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        VisionTextDualEncoderModel,
    )

    from osreco.training.loop import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(minilm_dir)
    text = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=32, patch_size=8))
    model = VisionTextDualEncoderModel(vision_model=vision, text_model=text)
    src = tmp_path / "vtde"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(src)
    manifest = export_model(src, tmp_path / "bundle", ExportOptions(), report=lambda *_: None)
    assert manifest.image["family"] == "vision-text-dual-encoder"
    assert manifest.parity["image_min_cosine"] >= 0.9999


def test_image_bundles_refuse_quantization_clearly(tiny_clip_dir, tmp_path):
    with pytest.raises(ConfigError, match="plain fp32"):
        export_model(tiny_clip_dir, tmp_path / "b", ExportOptions(quantize="int8"), report=lambda *_: None)
    assert not (tmp_path / "b").exists()


def test_text_bundle_asked_for_images_fails_at_start(tiny_bundle):
    enc = Encoder(tiny_bundle, threads=1)
    assert not enc.has_images
    with pytest.raises(ConfigError, match="no image tower") as e:
        enc.require_images("OSRECO_IMAGE_BUNDLE")
    assert "osreco export" in (e.value.fix or "")


def test_tampered_image_tower_is_refused(clip_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(clip_bundle, copy)
    with open(copy / "image.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="image.onnx"):
        Encoder(copy)


def _bomb_png(side: int) -> bytes:
    """A valid PNG header claiming side × side pixels, with a tiny (deflated zeros) body."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * (side + 1) * 64, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


@pytest.mark.parametrize("data,problem", [
    (b"", "empty"),
    (b"this is plain text, not a picture", "not_an_image"),
    (b"%PDF-1.4\n%\xe2\xe3", "not_an_image"),
    (_bomb_png(50_000), "too_many_pixels"),
])
def test_decode_refuses_bad_bytes_with_the_reason(data, problem):
    with pytest.raises(ImageInputError) as e:
        decode_image(data, max_pixels=10_000_000, source="upload")
    assert e.value.problem == problem
    assert e.value.status in (400, 413)


def test_decode_refuses_truncated_and_oversized_images():
    from PIL import Image

    good = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    assert decode_image(good).size == (64, 64)
    with pytest.raises(ImageInputError) as e:
        decode_image(good[: len(good) // 2])
    assert e.value.problem == "corrupt"
    with pytest.raises(ImageInputError, match="over the limit of 1000 bytes") as e:
        decode_image(good, max_bytes=1000)
    assert e.value.status == 413


def test_train_image_text_cli_on_a_catalog_exports_a_bundle(tmp_path):
    """`osreco train image-text` on a catalog's (picture, title) pairs: a tiny CLIP, one epoch,
    exported through the exporter (parity-gated); a row with a broken picture names its line."""
    from click.testing import CliRunner

    from osreco.cli import cli
    from osreco.ingest.synthetic_shop import render, shop_items

    rows = []
    for item in shop_items()[:6]:
        render(item).save(tmp_path / f"{item.item_id}.png")
        rows.append(item.row(f"{item.item_id}.png"))
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(cli, ["train", "image-text", "--catalog", str(catalog), "--epochs", "1",
                                      "--batch-size", "4", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    enc = Encoder(tmp_path / "out" / "bundle")
    assert enc.has_images and enc.manifest.parity["image_min_cosine"] >= 0.9999
    (tmp_path / "bad.jsonl").write_text(json.dumps(dict(rows[0], image="missing.png")) + "\n")
    bad = CliRunner().invoke(cli, ["train", "image-text", "--catalog", str(tmp_path / "bad.jsonl"), "-o",
                                   str(tmp_path / "out2")])
    assert bad.exit_code == 2 and "bad.jsonl:1" in bad.output and "does not exist" in bad.output
