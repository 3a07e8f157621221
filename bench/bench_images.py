"""Image encoding benchmark: ``Encoder.encode_images`` (PIL + numpy + onnxruntime) vs the
PyTorch model with its Hugging Face processor, for the same image–text model.

Both encode the same rendered product photos (``osreco.ingest.synthetic_shop``) in batches,
with the same thread count, alternated round by round after a warm-up; images/s is the
median over rounds, preprocessing included on both sides. Default model: the tiny CLIP of the
synthetic shop (``osreco.training.image_text.shop_bundle``); ``--model-dir`` exports another
CLIP/SigLIP folder first.

Run: ``python -m bench.bench_images [--threads 2] [--rounds 5] [--images 256] [--model-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _torch_side(model_dir: Path, threads: int) -> Any:
    import torch
    from transformers import AutoImageProcessor, AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)

    def encode(images: list[Any], batch: int) -> None:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                pixels = processor(images=images[start:start + batch], return_tensors="pt")["pixel_values"]
                torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)

    return encode


def run(model_dir: Path | None, threads: int, rounds: int, n_images: int, batch: int) -> dict[str, Any]:
    """Returns: images/s of both sides and the speed-up."""
    from osreco.exporter import Encoder, ExportOptions, export_model
    from osreco.ingest.synthetic_shop import render, shop_items
    from osreco.training.image_text import shop_bundle

    if model_dir is None:
        bundle = shop_bundle()
        model_dir = bundle.parent / "model"
    else:
        bundle = Path(tempfile.mkdtemp(prefix="osreco-bench-img-")) / "bundle"
        export_model(model_dir, bundle, ExportOptions(threads=threads))
    items = shop_items()
    images = [render(items[i % len(items)], seed=1 + i // len(items)) for i in range(n_images)]
    enc = Encoder(bundle, threads=threads, device="cpu")
    torch_encode = _torch_side(model_dir, threads)
    sides = {"onnx": lambda: enc.encode_images(images, batch_size=batch),
             "pytorch": lambda: torch_encode(images, batch)}
    for f in sides.values():  # warm-up
        f()
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for name, f in sides.items():
            t = time.perf_counter()
            f()
            rates[name].append(n_images / (time.perf_counter() - t))
    out = {name: round(statistics.median(r), 1) for name, r in rates.items()}
    return {"images_per_s": out, "speedup": round(out["onnx"] / out["pytorch"], 2), "threads": threads,
            "images": n_images, "batch": batch, "rounds": rounds, "model": str(model_dir),
            "image_size": enc.manifest.image.get("image_size")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.model_dir, args.threads, args.rounds, args.images, args.batch), indent=2))


if __name__ == "__main__":
    main()
