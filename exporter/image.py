"""Images for image–text bundles: safe decoding and the tower's preprocessing (PIL + numpy only).

A bundle with an image tower carries ``image.onnx`` and ``preprocessor.json``; the latter is
the model's Hugging Face image-processor config reduced to what the runtime needs (resize,
centre crop, rescale, normalize), so the runtime reproduces the processor without
transformers. ``decode_image`` is the one place that turns untrusted bytes into a picture:
size cap, decompression-bomb check (pixel cap before decoding), corrupt and truncated files,
non-images — each one ``ImageInputError`` naming the problem.

Example:
    >>> prep = ImagePreprocessor.from_hf_config({"size": {"shortest_edge": 224},
    ...     "crop_size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    >>> prep([decode_image(open("shoe.jpg", "rb").read())]).shape
    (1, 3, 224, 224)
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osreco.exporter.errors import BundleError, ImageInputError, RuntimeEnvError

IMAGE_MODEL_NAME = "image.onnx"
PREPROCESSOR_NAME = "preprocessor.json"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:
        raise RuntimeEnvError("Pillow is not installed", fix="pip install pillow (an osreco dependency)") from e
    return Image


def decode_image(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 source: str | None = None) -> Any:
    """Decode untrusted image bytes into an RGB PIL image, refusing anything unsafe or broken.

    Args:
        data: the file's bytes.
        max_bytes: the size cap.
        max_pixels: width × height cap, checked from the header before any pixel is decoded
            (a decompression bomb never gets decoded).
        source: what the bytes are (a path, URL or request field), for the message.
    Returns:
        A fully loaded RGB ``PIL.Image.Image``.
    Raises:
        ImageInputError: empty, over ``max_bytes``, not an image (or an unsupported format),
            over ``max_pixels``, corrupt or truncated.
    """
    image_mod = _pil()
    from PIL import UnidentifiedImageError

    if not data:
        raise ImageInputError("image is empty (0 bytes)", "empty", source, "send a JPEG, PNG or WebP file")
    if len(data) > max_bytes:
        raise ImageInputError(f"image is {len(data)} bytes, over the limit of {max_bytes} bytes",
                              "too_large", source, f"send an image of at most {max_bytes // 1024} KiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_mod.DecompressionBombWarning)
            img = image_mod.open(io.BytesIO(data))
            fmt = img.format or "?"
            if fmt not in FORMATS:
                raise ImageInputError(f"image format {fmt} is not accepted (accepted: {', '.join(FORMATS)})",
                                      "not_an_image", source, "send a JPEG, PNG or WebP file")
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageInputError("image has no pixels", "empty", source, "send a real picture")
            if width * height > max_pixels:
                raise ImageInputError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                    "(decompression-bomb check)", "too_many_pixels", source,
                    f"downscale it to at most {max_pixels} pixels")
            img.load()
            return img.convert("RGB")
    except ImageInputError:
        raise
    except UnidentifiedImageError as e:
        raise ImageInputError("not an image (no known image format recognised)", "not_an_image", source,
                              "send a JPEG, PNG or WebP file") from e
    except (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning) as e:
        raise ImageInputError(f"image is too large to decode safely: {e}", "too_many_pixels", source,
                              f"downscale it to at most {max_pixels} pixels") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageInputError(f"image is corrupt or truncated: {e}", "corrupt", source,
                              "re-save or re-upload the file") from e


@dataclass(frozen=True)
class ImagePreprocessor:
    """The image tower's input pipeline, as in the model's Hugging Face image processor.

    Attributes:
        shortest_edge: resize so the short side has this length (keeps aspect); 0 = not used.
        height, width: resize to exactly this size when ``shortest_edge`` is 0.
        crop_height, crop_width: centre crop after the resize (0 = no crop).
        resample: PIL resampling filter id (3 = bicubic, 2 = bilinear).
        rescale: pixel scale factor (1/255).
        mean, std: per-channel normalization.
    """

    shortest_edge: int = 0
    height: int = 0
    width: int = 0
    crop_height: int = 0
    crop_width: int = 0
    resample: int = 3
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = _CLIP_MEAN
    std: tuple[float, float, float] = _CLIP_STD

    def __post_init__(self) -> None:
        if self.shortest_edge <= 0 and (self.height <= 0 or self.width <= 0):
            raise BundleError("image preprocessor has neither shortest_edge nor height and width",
                              PREPROCESSOR_NAME, "re-export the bundle")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise BundleError("image preprocessor needs 3 means and 3 positive stds", PREPROCESSOR_NAME,
                              "re-export the bundle")

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the tensor the tower reads."""
        if self.crop_height and self.crop_width:
            return self.crop_height, self.crop_width
        if self.shortest_edge:
            return self.shortest_edge, self.shortest_edge
        return self.height, self.width

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> ImagePreprocessor:
        """Read a Hugging Face ``preprocessor_config.json`` (CLIP, SigLIP, ViT processors).

        Raises:
            BundleError: a size it cannot express (the message names the key).
        """
        size = cfg.get("size", 224)
        resize: dict[str, int] = {}
        if cfg.get("do_resize", True) is False:
            raise BundleError("image processor with do_resize=false is not supported",
                              "preprocessor_config.json", "set a fixed size in the processor config")
        if isinstance(size, int):
            resize = {"height": size, "width": size}
        elif "shortest_edge" in size:
            resize = {"shortest_edge": int(size["shortest_edge"])}
        elif "height" in size and "width" in size:
            resize = {"height": int(size["height"]), "width": int(size["width"])}
        else:
            raise BundleError(f"image processor size {size!r} is not supported", "preprocessor_config.json",
                              "use size {shortest_edge} or {height, width}")
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", False) else None
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        normalize = cfg.get("do_normalize", True)
        return cls(**resize, crop_height=int(crop["height"]) if crop else 0,
                   crop_width=int(crop["width"]) if crop else 0,
                   resample=int(cfg.get("resample", 3)),
                   rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
                   mean=tuple(cfg.get("image_mean", _CLIP_MEAN)) if normalize else (0.0, 0.0, 0.0),
                   std=tuple(cfg.get("image_std", _CLIP_STD)) if normalize else (1.0, 1.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """Returns: the JSON form written as the bundle's ``preprocessor.json``."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_file(cls, path: Path) -> ImagePreprocessor:
        """Read a bundle's ``preprocessor.json``. Raises: BundleError: unreadable or invalid."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise BundleError(f"cannot read the image preprocessor: {e}", path, "re-export the bundle") from e

    def __call__(self, images: Sequence[Any]) -> np.ndarray:
        """Args: images: RGB PIL images. Returns: ``(n, 3, H, W)`` float32 pixel values."""
        out_h, out_w = self.output_size
        batch = np.zeros((len(images), 3, out_h, out_w), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        for i, img in enumerate(images):
            arr = np.asarray(self._resize_crop(img.convert("RGB")), dtype=np.float64) * self.rescale
            batch[i] = (arr.astype(np.float32).transpose(2, 0, 1) - mean) / std
        return batch

    def _resize_crop(self, img: Any) -> Any:
        w, h = img.size
        if self.shortest_edge:
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            size = (self.width, self.height)
        if size != (w, h):
            img = img.resize(size, resample=self.resample, reducing_gap=None)
        if self.crop_height and self.crop_width:
            w, h = img.size
            top, left = (h - self.crop_height) // 2, (w - self.crop_width) // 2
            if top < 0 or left < 0:  # smaller than the crop: pad with black like the processor
                canvas = _pil().new("RGB", (max(w, self.crop_width), max(h, self.crop_height)))
                canvas.paste(img, (max(0, -left), max(0, -top)))
                img, top, left = canvas, max(0, top), max(0, left)
            img = img.crop((left, top, left + self.crop_width, top + self.crop_height))
        return img
