"""Export an image–text dual encoder (CLIP, SigLIP, VisionTextDualEncoder) as one bundle.

The bundle holds two towers with one manifest: ``model.onnx`` is the text tower (input ids and
mask → the projected, pooled text vector, so the ordinary ``Encoder.encode_queries`` /
``encode_items`` calls embed text into the shared space) and ``image.onnx`` is the image tower
(pixel values → the projected image vector), with ``preprocessor.json`` telling the runtime
how to turn a picture into pixel values. Parity is measured end to end against PyTorch and the
model's own Hugging Face processor: texts and pictures (odd sizes, grey, transparent, noise).

Only fp32 plain graphs are exported for now (``--quantize``, ``--fp16`` and ``--optimize``
are refused with a clear error).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from osreco.exporter.errors import ConfigError, ModelDirError, RuntimeEnvError
from osreco.exporter.image import IMAGE_MODEL_NAME, PREPROCESSOR_NAME, ImagePreprocessor
from osreco.exporter.manifest import MODEL_NAME, Manifest
from osreco.exporter.modeldir import ModelInfo

IMAGE_TEXT_TYPES = ("clip", "siglip", "vision-text-dual-encoder")
TEXT_OUTPUT = "text_embeds"
IMAGE_INPUT, IMAGE_OUTPUT = "pixel_values", "image_embeds"


def image_text_type(model_dir: str | Path) -> str | None:
    """Args: model_dir: a folder. Returns: its model_type when it is an image–text dual encoder."""
    cfg = Path(model_dir) / "config.json"
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None
    return model_type if model_type in IMAGE_TEXT_TYPES else None


def parity_images() -> list[Any]:
    """Pictures the parity check runs: sizes, aspect ratios, grey, transparent, noise, tiny."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out = [Image.new("RGB", (64, 64), c) for c in ((200, 30, 30), (20, 160, 60), (250, 250, 250))]
    grad = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (40, 1))
    out.append(Image.fromarray(np.stack([grad, grad[::-1], np.full_like(grad, 90)], axis=2)))
    out.append(Image.fromarray(rng.integers(0, 255, (50, 130, 3), dtype=np.uint8)))
    out.append(Image.fromarray(rng.integers(0, 255, (300, 80), dtype=np.uint8), mode="L").convert("RGB"))
    rgba = Image.new("RGBA", (70, 70), (0, 0, 255, 128))
    ImageDraw.Draw(rgba).ellipse((10, 10, 60, 60), fill=(255, 200, 0, 255))
    out.append(rgba.convert("RGB"))
    out.append(Image.new("RGB", (5, 7), (10, 10, 10)))
    return out


class _Tower:
    """torch modules wrapping ``get_text_features`` / ``get_image_features`` for export."""

    @staticmethod
    def build(model: Any, which: str) -> Any:
        import torch

        class Text(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.m.get_text_features(input_ids=input_ids, attention_mask=attention_mask)

        class Image(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, pixel_values: Any) -> Any:
                return self.m.get_image_features(pixel_values=pixel_values)

        return (Text if which == "text" else Image)().eval()


def _export_graph(module: Any, args: tuple, names: list[str], output: str, axes: dict, path: Path,
                  opset: int | None) -> None:
    import torch

    kwargs: dict[str, Any] = dict(input_names=names, output_names=[output], dynamic_axes=axes,
                                  opset_version=opset or 17, do_constant_folding=True)
    with torch.no_grad():
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
        except TypeError:  # an older torch without the dynamo switch
            torch.onnx.export(module, args, str(path), **kwargs)


def _load(model_dir: Path) -> tuple[Any, Any, Any]:
    try:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
    except ImportError as e:
        raise RuntimeEnvError("transformers is not installed", fix="pip install 'osreco[export]'") from e
    try:
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ModelDirError(f"cannot load the image–text model, its image processor or tokenizer: {e}",
                            model_dir, "save model, processor and a fast tokenizer with save_pretrained") from e
    return model, processor, tok


def build_image_text_graphs(model_dir: Path, bundle: Path, options: Any,
                            say: Callable[[str], None]) -> Manifest:
    """Write model.onnx, image.onnx, preprocessor.json and the tokenizer into ``bundle``.

    Args:
        model_dir: the Hugging Face folder (config model_type in ``IMAGE_TEXT_TYPES``).
        bundle: the scratch bundle folder.
        options: the ``ExportOptions`` (only fp32 plain graphs are supported).
        say: progress lines.
    Returns:
        The manifest to write (without parity and hashes).
    Raises:
        ConfigError: an option image bundles do not support. ModelDirError: unloadable folder.
    """
    import torch

    from osreco.exporter import convert

    if options.precision != "fp32" or options.optimize or options.ml_commons:
        raise ConfigError("image–text bundles are exported as plain fp32 graphs only", model_dir,
                          "drop --quantize/--fp16/--optimize/--ml-commons")
    model, processor, tok = _load(model_dir)
    prep = ImagePreprocessor.from_hf_config(processor.to_dict())
    text_cfg = getattr(model.config, "text_config", None)
    positions = int(getattr(text_cfg, "max_position_embeddings", 512) or 512)
    max_length = min(positions, int(getattr(tok, "model_max_length", positions) or positions))
    if options.max_length is not None:
        max_length = min(max_length, options.max_length)
    h, w = prep.output_size
    say(f"exporting {model_dir} ({model.config.model_type}, text + image towers, fp32, image {h}x{w})")
    ids = torch.tensor([tok("a red shoe")["input_ids"]] * 2)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        dim = int(model.get_text_features(input_ids=ids, attention_mask=mask).shape[-1])
    _export_graph(_Tower.build(model, "text"), (ids, mask), ["input_ids", "attention_mask"], TEXT_OUTPUT,
                  {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                   TEXT_OUTPUT: {0: "batch"}}, bundle / MODEL_NAME, options.opset)
    _export_graph(_Tower.build(model, "image"), (torch.zeros(2, 3, h, w),), [IMAGE_INPUT], IMAGE_OUTPUT,
                  {IMAGE_INPUT: {0: "batch"}, IMAGE_OUTPUT: {0: "batch"}}, bundle / IMAGE_MODEL_NAME,
                  options.opset)
    (bundle / PREPROCESSOR_NAME).write_text(json.dumps(prep.to_dict(), indent=2) + "\n", encoding="utf-8")
    info = ModelInfo(path=model_dir, model_type=str(model.config.model_type), architecture="", task="embedding",
                     dim=dim, pooling="cls", normalize=True, max_length=max_length, labels=(),
                     sentence_transformers=False)
    pad_id = convert.save_tokenizer(info, bundle, max_length)
    inputs, _ = convert.onnx_io(bundle / MODEL_NAME)
    return Manifest(model_name=options.model_name or model_dir.name, task="embedding", dim=dim, pooling="cls",
                    normalize=True, max_length=max_length, opset=convert.onnx_opset(bundle / MODEL_NAME),
                    precision="fp32", model_type=str(model.config.model_type), input_names=inputs,
                    output_name=TEXT_OUTPUT, pad_token_id=pad_id,
                    image={"model": IMAGE_MODEL_NAME, "input_name": IMAGE_INPUT, "output_name": IMAGE_OUTPUT,
                           "preprocessor": PREPROCESSOR_NAME, "family": str(model.config.model_type),
                           "image_size": [h, w]})


def measure_image_text_parity(model_dir: Path, bundle: Path, threads: int = 2) -> dict:
    """Compare both towers of a scratch bundle with PyTorch and the model's own processor.

    Returns:
        ``min_cosine`` / ``mean_cosine`` over texts, ``image_min_cosine`` /
        ``image_mean_cosine`` over pictures, ``top5_overlap`` of text→image ranking.
    """
    import torch

    from osreco.exporter.encoder import Encoder, l2_normalize
    from osreco.exporter.validate import PARITY_TEXTS, RETRIEVAL_QUERIES, cosine_rows, topk_overlap

    torch.set_num_threads(threads)
    model, processor, tok = _load(model_dir)
    enc = Encoder(bundle, threads=threads, device="cpu", cache_size=0)
    texts = [t for t in (*PARITY_TEXTS, *RETRIEVAL_QUERIES)]
    images = parity_images()
    with torch.no_grad():
        ref_t = np.concatenate([model.get_text_features(**{
            k: v for k, v in tok([t], truncation=True, max_length=enc.manifest.max_length,
                                 return_tensors="pt").items() if k in ("input_ids", "attention_mask")}).numpy()
            for t in texts])
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        ref_i = model.get_image_features(pixel_values=pixels).numpy()
    ref_t, ref_i = l2_normalize(ref_t), l2_normalize(ref_i)
    got_t = np.stack([enc.encode_queries([t])[0] for t in texts])
    got_i = enc.encode_images(images, batch_size=3)
    text_cos, image_cos = cosine_rows(ref_t, got_t), cosine_rows(ref_i, got_i)
    return {"min_cosine": float(text_cos.min()), "mean_cosine": float(text_cos.mean()),
            "image_min_cosine": float(image_cos.min()), "image_mean_cosine": float(image_cos.mean()),
            "top5_overlap": topk_overlap(ref_t, ref_i, got_t, got_i, k=5),
            "n_texts": len(texts), "n_images": len(images)}
