"""Image item features: fetch each item's picture, embed it, put it in ``image_embedding``.

``with_images`` sits between the catalog reader and the writer. For every item with an
``image`` (a local path — relative ones are read from the catalog's folder —, a ``file://``
URL or an ``http(s)`` URL) it fetches the bytes under the limits of ``ImageLimits`` (size
cap, timeout, ``Content-Type: image/*``, pixel cap against decompression bombs), hashes
them, and embeds the picture with the bundle's image tower — unless the stored document
already has the same ``image_hash``, whose vector is then reused (an unchanged image is
never re-embedded).

An item whose image cannot be used is dead-lettered as a whole, with the reason (field
``image``): its text is **not** indexed either, so a shop never shows an item with a broken
picture; fix the image (or drop the column) and rerun — the load is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from osreco.exporter.errors import ImageInputError
from osreco.exporter.image import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode_image
from osreco.ingest.catalog import CatalogEntry, CatalogItem
from osreco.ingest.errors import ConfigError, RowError
from osreco.ingest.media import by_chunks, fetch_media, stored_lookup

IMAGE_FIELDS = ("image_embedding", "image_hash")


class ImageEncoderLike(Protocol):
    """What the image stage needs from ``osreco.exporter.Encoder``."""

    def encode_images(self, images: list[Any], batch_size: int = 16) -> np.ndarray: ...


@dataclass(frozen=True)
class ImageLimits:
    """Limits on one item image.

    Args:
        max_bytes: the size cap of the file or download.
        max_pixels: width × height cap (checked from the header before decoding).
        timeout_s: connect and read timeout of an http(s) fetch.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or not self.timeout_s > 0:
            raise ConfigError(f"image limits must be positive, got {self}", field="--image-max-bytes",
                              fix="pass positive --image-max-bytes / --image-timeout")


def _error(message: str, problem: str, ref: str, fix: str) -> Exception:
    return ImageInputError(message, problem, ref, fix)


def fetch_image(ref: str, limits: ImageLimits, base_dir: Path | None = None) -> bytes:
    """Read an image reference's bytes, never more than ``limits.max_bytes``
    (see :func:`osreco.ingest.media.fetch_media`).

    Args:
        ref: a local path, ``file://`` URL or ``http(s)://`` URL.
        limits: size cap and timeout.
        base_dir: folder that relative paths are read from.
    Returns:
        The bytes.
    Raises:
        ImageInputError: missing file, unreachable URL, HTTP error, non-image content type,
            or over the size cap.
    """
    return fetch_media(ref, kind="image", max_bytes=limits.max_bytes, timeout_s=limits.timeout_s, base_dir=base_dir,
                       error=_error, cap_option="--image-max-bytes", timeout_option="--image-timeout")


def _dead(item: CatalogItem, error: ImageInputError) -> RowError:
    row_error = RowError(f"image {item.fields.get('image')!s}: {error.message}", line=item.line, field="image",
                         fix=error.fix, row={"item_id": item.item_id})
    row_error.context["item_id"] = item.item_id
    row_error.context["problem"] = error.problem
    return row_error


def with_images(entries: Iterable[CatalogEntry], encoder: ImageEncoderLike,
                stored: Any = None, limits: ImageLimits | None = None, base_dir: Path | None = None,
                batch_size: int = 32) -> Iterator[CatalogEntry]:
    """Add ``image_embedding`` and ``image_hash`` to every item with an ``image``.

    Args:
        entries: the catalog reader's items and row errors, in order.
        encoder: an image–text bundle's Encoder (``encode_images``).
        stored: ``ids -> {id: {"image_hash", "image_embedding"}}`` of documents already indexed
            (their vectors are reused when the hash matches), or None.
        limits: fetch and decode limits.
        base_dir: folder relative image paths are read from (the catalog's).
        batch_size: items fetched and embedded together.
    Yields:
        The entries in order; an item whose image fails becomes a ``RowError`` (field ``image``).
    """
    limits = limits or ImageLimits()
    yield from by_chunks(entries, batch_size, lambda chunk: _embed_chunk(chunk, encoder, stored, limits, base_dir))


def _embed_chunk(chunk: list[CatalogEntry], encoder: ImageEncoderLike, stored: Any, limits: ImageLimits,
                 base_dir: Path | None) -> list[CatalogEntry]:
    out: list[CatalogEntry] = list(chunk)
    wanted = [(k, e) for k, e in enumerate(chunk)
              if isinstance(e, CatalogItem) and not e.deleted and e.fields.get("image")]
    old = stored([e.item_id for _, e in wanted]) if stored and wanted else {}
    fresh: list[tuple[int, CatalogItem, str, Any]] = []
    for k, item in wanted:
        ref = str(item.fields["image"])
        try:
            data = fetch_image(ref, limits, base_dir)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            prior = old.get(item.item_id) or {}
            if prior.get("image_hash") == digest and prior.get("image_embedding"):
                out[k] = replace(item, fields=dict(item.fields, image_hash=digest,
                                                   image_embedding=_f32(prior["image_embedding"])))
                continue
            fresh.append((k, item, digest, decode_image(data, limits.max_bytes, limits.max_pixels, ref)))
        except ImageInputError as e:
            out[k] = _dead(item, e)
    if fresh:
        vectors = encoder.encode_images([pic for *_, pic in fresh])
        for (k, item, digest, _), vec in zip(fresh, vectors):
            out[k] = replace(item, fields=dict(item.fields, image_hash=digest, image_embedding=_f32(vec)))
    return out


def _f32(values: Any) -> list[float]:
    """A vector as the shortest decimal of each float32: the same numbers whether just computed or
    read back from the index (which may print stored vectors as float32), so the item's
    ``content_hash`` of an unchanged picture does not change."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def stored_images(client: Any, indexes: Iterable[str | None]) -> Any:
    """A lookup of already indexed ``image_hash`` / ``image_embedding`` by item id (for reuse)."""
    return stored_lookup(client, indexes, IMAGE_FIELDS)
