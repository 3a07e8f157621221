"""The image half of a search: search by photo and text-to-image on ``image_embedding``.

With an image–text bundle (``OSRECO_IMAGE_BUNDLE``) the sidecar adds up to two sub-searches
to the search's one ``_msearch``, under the query's filters:

* ``image``: the query photo's vector (the bundle's image tower) — "looks like your photo";
* ``text_image``: the query text through the same bundle's text tower — "its picture matches
  your words".

Both are fused with BM25, meaning and taste like any other signal (weights
``OSRECO_IMAGE_WEIGHT``, ``OSRECO_TEXT_IMAGE_WEIGHT``). A photo with no words asks only for
what the photo (and taste) finds: the text-less listing is left out. The photo is decoded
here, under the request limits: a corrupt, truncated, huge or non-image upload is one 4xx.
A bundle without an image tower fails when the sidecar starts, never per request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osreco.exporter.image import decode_image
from osreco.plugin.config import Limits, SidecarConfig
from osreco.plugin.intent.types import Intent
from osreco.plugin.query import MsearchPlan, QueryOptions, _base, _bool, filter_clauses, knn_query

IMAGE_FIELD = "image_embedding"
IMAGE_SIGNALS = ("image", "text_image")


class ImageSearch:
    """Turns a request's photo and text into ``image`` / ``text_image`` sub-searches.

    Args:
        encoder: an image–text bundle's Encoder (``encode_images``, ``encode_queries``), or None
            (no image search: a request with a photo is refused with a 400 naming the setting).
        limits: the request limits (image bytes and pixels).
    """

    def __init__(self, encoder: Any, limits: Limits):
        self.encoder, self.limits = encoder, limits

    @classmethod
    def from_config(cls, config: SidecarConfig) -> ImageSearch:
        """Load ``config.image_bundle_dir`` (when set) and check it has an image tower.

        Raises:
            ConfigError / BundleError: the bundle does not load or has no image tower (start-up).
        """
        if not config.image_bundle_dir:
            return cls(None, config.limits)
        from osreco.exporter.encoder import Encoder

        encoder = Encoder(config.image_bundle_dir, threads=config.encoder_threads, device="cpu")
        encoder.require_images("OSRECO_IMAGE_BUNDLE")
        return cls(encoder, config.limits)

    @property
    def enabled(self) -> bool:
        """Whether image search is configured."""
        return self.encoder is not None

    def photo_vector(self, image: bytes | None) -> np.ndarray | None:
        """The query photo's vector (checked before anything touches the node).

        Raises:
            RequestError: a photo but no image bundle. ImageInputError: the photo is not a
                usable image (4xx naming the problem or limit).
        """
        from osreco.plugin.errors import RequestError

        if image is None:
            return None
        if self.encoder is None:
            raise RequestError("this sidecar has no image search", field="image",
                               fix="set OSRECO_IMAGE_BUNDLE to an image–text bundle, or send q only")
        picture = decode_image(image, self.limits.max_image_bytes, self.limits.max_image_pixels, "image")
        return self.encoder.encode_images([picture])[0]

    def vectors(self, photo: np.ndarray | None, text: str) -> dict[str, np.ndarray]:
        """The vectors of the image signals this request has.

        Args:
            photo: the query photo's vector (``photo_vector``), or None.
            text: the query's free text left after parsing ("" for none).
        Returns:
            ``{"image": photo vector, "text_image": text vector}``, each present when asked.
        """
        out: dict[str, np.ndarray] = {}
        if photo is not None:
            out["image"] = photo
        if text and self.encoder is not None:
            out["text_image"] = self.encoder.encode_queries([text])[0]
        return out

    def extend(self, plan: MsearchPlan, intent: Intent, options: QueryOptions,
               vectors: dict[str, np.ndarray]) -> MsearchPlan:
        """``plan`` plus one kNN sub-search on ``image_embedding`` per vector, under the filters;
        with a photo and no words, the text-less listing (``bm25``) is dropped."""
        if not vectors:
            return plan
        if "image" in vectors and not intent.text:
            plan = without(plan, "bm25")
        filters, must_not = filter_clauses(intent, options)
        for signal in IMAGE_SIGNALS:
            if signal in vectors:
                body = _base(options, options.size)
                body["query"] = knn_query(IMAGE_FIELD, vectors[signal], options.size, options,
                                          _bool(filters, must_not))
                plan = plan.adding(signal, options.index, body)
        return plan


def without(plan: MsearchPlan, signal: str) -> MsearchPlan:
    """``plan`` without the sub-search answering ``signal``."""
    keep = [i for i, s in enumerate(plan.signals) if s != signal]
    lines = [line for i in keep for line in plan.lines[2 * i:2 * i + 2]]
    return MsearchPlan(lines, tuple(plan.signals[i] for i in keep))
