"""The settings store: fusion weights learned by ``osreco learn``, served per query class.

One document, ``_id`` ``fusion``, in ``<store_prefix>-settings``::

    {"version": 3, "promoted_at": "2026-11-29T23:00:00Z", "source": "osreco learn run <id>",
     "classes": {"text": {"bm25": 0.5, "dense": 0.5, "taste": 0.3, "popularity": 0.5, "rrf_k": 60}, ...}}

A class holds the weights of the signals (``taste`` is the class's collaborative boost) and
RRF's k. A class absent from the document, and every class when there is no document, keeps the
configured hand weights (``SidecarConfig.fusion``) exactly. The sidecar reads the document at
start and again on its periodic reload check (every ``OSRECO_BUNDLE_RELOAD_S`` seconds); a
read that fails keeps the weights it has. ``osreco learn`` writes it (:func:`write_fusion`).

The served CF model is watched the same way (:class:`CFModelWatch`): when ``osreco learn``
replaces the files in ``OSRECO_CF_MODEL``, the next check loads the new model and swaps it in.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opensearchpy import NotFoundError as OSNotFound
from opensearchpy import OpenSearch

from osreco.plugin.errors import ConfigError
from osreco.plugin.fusion import FusionSettings

log = logging.getLogger("osreco.plugin.settings_store")

__all__ = ["CLASSES", "WEIGHT_KEYS", "FUSION_DOC", "settings_index", "validate_classes", "read_fusion",
           "write_fusion", "class_weights", "apply_weights", "SettingsStore", "CFModelWatch",
           "RerankerWatch"]

CLASSES = ("listing", "text", "title", "none")
"""The query classes weights are learned for ("none": recommend and similar, no query)."""
WEIGHT_KEYS = ("bm25", "dense", "taste", "popularity", "rrf_k")
FUSION_DOC = "fusion"
MAX_WEIGHT = 100.0
MAPPING: dict[str, Any] = {"dynamic": "strict", "properties": {
    "version": {"type": "integer"}, "promoted_at": {"type": "date"}, "source": {"type": "keyword"},
    "classes": {"type": "object", "enabled": False}}}


def settings_index(prefix: str) -> str:
    """Name of the settings index for ``prefix``."""
    return f"{prefix}-settings"


def validate_classes(classes: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The per-class weights, checked: known classes and keys, finite weights in 0..100, rrf_k >= 1.

    Raises:
        ConfigError: naming the class and key that is wrong.
    """
    out: dict[str, dict[str, float]] = {}
    for cls, weights in classes.items():
        if cls not in CLASSES:
            raise ConfigError(f"settings store: query class {cls!r} is not one of {CLASSES}", field="classes")
        if not isinstance(weights, Mapping):
            raise ConfigError(f"settings store: classes.{cls} is not an object", field=f"classes.{cls}")
        row: dict[str, float] = {}
        for key, value in weights.items():
            where = f"classes.{cls}.{key}"
            if key not in WEIGHT_KEYS:
                raise ConfigError(f"settings store: {where} is not one of {WEIGHT_KEYS}", field=where)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"settings store: {where} = {value!r} is not a number", field=where)
            low = 1 if key == "rrf_k" else 0
            if not low <= value <= (10000 if key == "rrf_k" else MAX_WEIGHT):
                raise ConfigError(f"settings store: {where} = {value} is out of range", field=where)
            row[key] = float(value)
        out[cls] = row
    return out


def read_fusion(client: OpenSearch, prefix: str) -> dict[str, Any] | None:
    """The stored fusion document, or None when there is none (index or doc missing)."""
    try:
        doc = client.get(index=settings_index(prefix), id=FUSION_DOC)
    except OSNotFound:
        return None
    src = dict(doc.get("_source") or {})
    src["classes"] = validate_classes(src.get("classes") or {})
    return src


def write_fusion(client: OpenSearch, prefix: str, classes: Mapping[str, Mapping[str, float]],
                 source: str) -> dict[str, Any]:
    """Store ``classes`` as the next version of the fusion document (refreshed: readable at once).

    Returns:
        the document written.
    """
    checked = validate_classes(classes)
    index = settings_index(prefix)
    if not client.indices.exists(index=index):
        try:
            client.indices.create(index=index, body={"settings": {"number_of_shards": 1,
                                                                  "auto_expand_replicas": "0-1"},
                                                     "mappings": MAPPING})
        except Exception:  # created meanwhile by another writer: use it
            if not client.indices.exists(index=index):
                raise
    old = read_fusion(client, prefix)
    doc = {"version": int(old["version"]) + 1 if old else 1,
           "promoted_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
           "source": source, "classes": checked}
    client.index(index=index, id=FUSION_DOC, body=doc, refresh="true")
    return doc


def class_weights(base: FusionSettings, cls: str) -> dict[str, float]:
    """The hand weights of class ``cls`` in the store's shape (taste = the class's taste weight)."""
    taste = {"listing": base.listing_cf_weight, "title": base.title_cf_weight}.get(cls, base.cf_weight)
    return {"bm25": base.bm25_weight, "dense": base.dense_weight, "taste": taste,
            "popularity": base.popularity_weight, "rrf_k": float(base.rrf_k)}


def apply_weights(base: FusionSettings, cls: str, weights: Mapping[str, float] | None) -> FusionSettings:
    """``base`` with the stored weights of class ``cls`` (``base`` itself when there are none)."""
    if not weights:
        return base
    taste_field = {"listing": "listing_cf_weight", "title": "title_cf_weight"}.get(cls, "cf_weight")
    fields = {"bm25": "bm25_weight", "dense": "dense_weight", "taste": taste_field,
              "popularity": "popularity_weight"}
    changes: dict[str, Any] = {fields[k]: float(v) for k, v in weights.items() if k in fields}
    if "rrf_k" in weights:
        changes["rrf_k"] = int(round(weights["rrf_k"]))
    return replace(base, **changes)


class SettingsStore:
    """The learned fusion weights being served (one reference, replaced whole on refresh).

    Args:
        read: () -> the stored document or None; may raise (node down: the weights are kept).
        base: the configured hand weights.
    """

    def __init__(self, read: Callable[[], dict[str, Any] | None], base: FusionSettings):
        self._read, self.base = read, base
        self.doc: dict[str, Any] | None = None
        self.last_error: str | None = None

    @classmethod
    def over(cls, client: OpenSearch, prefix: str, base: FusionSettings) -> SettingsStore:
        """A store reading ``<prefix>-settings`` through ``client``."""
        return cls(lambda: read_fusion(client, prefix), base)

    def refresh(self) -> str:
        """Read the document again; returns ``current``, ``loaded``, ``absent`` or ``failed``."""
        try:
            doc = self._read()
        except Exception as e:  # node down or a bad document: keep serving what we have
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("settings store: kept version %s: %s", (self.doc or {}).get("version"), self.last_error)
            return "failed"
        self.last_error = None
        if doc is None:
            changed, self.doc = self.doc is not None, None
            return "absent" if changed else "current"
        if self.doc is not None and doc.get("version") == self.doc.get("version"):
            return "current"
        self.doc = doc
        log.info("settings store: serving fusion weights version %s (%s)", doc.get("version"), doc.get("source"))
        return "loaded"

    def fusion(self, base: FusionSettings, cls: str) -> FusionSettings:
        """``base`` with the stored weights of ``cls`` applied (``base`` when none are stored)."""
        doc = self.doc
        return apply_weights(base, cls, (doc or {}).get("classes", {}).get(cls))

    def served(self) -> dict[str, Any]:
        """What GET /v1/settings shows: the weights served per class and where they come from."""
        doc = self.doc
        stored = (doc or {}).get("classes", {})
        classes = {}
        for cls in CLASSES:
            weights = class_weights(apply_weights(self.base, cls, stored.get(cls)), cls)
            classes[cls] = {**weights, "rrf_k": int(weights["rrf_k"]), "source": "learned" if cls in stored else "hand"}
        return {"version": (doc or {}).get("version"), "promoted_at": (doc or {}).get("promoted_at"),
                "source": (doc or {}).get("source", "hand weights (OSRECO_* settings)"),
                "method": self.base.method, "classes": classes, "last_error": self.last_error}


class CFModelWatch:
    """Reloads the CF model when the files in its folder are replaced (``osreco learn`` promotes).

    Args:
        model_dir: the served model folder (``OSRECO_CF_MODEL``).
        swap: receives the newly loaded model.
        load: folder -> model (``CFModel.load``).
    """

    def __init__(self, model_dir: str, swap: Callable[[Any], None], load: Callable[[str], Any]):
        self.model_dir, self._swap, self._load = model_dir, swap, load
        self.stamp = self._stamp()
        self.last_error: str | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(Path(self.model_dir) / "cf_model.json")   # written last by CFModel.save
            st_npz = os.stat(Path(self.model_dir) / "cf_model.npz")
        except OSError:
            return None
        return (st.st_mtime_ns, st_npz.st_mtime_ns)

    what = "CF model"

    def _source(self) -> str:
        """The folder to load from."""
        return self.model_dir

    def _describe(self, model: Any) -> str:
        return f"run {model.meta.get('run_id')}"

    def check(self) -> str:
        """``current``, ``loaded`` or ``failed`` (the old model kept)."""
        stamp = self._stamp()
        if stamp is None or stamp == self.stamp:
            return "current"
        try:
            model = self._load(self._source())
        except Exception as e:  # a half-written or bad model: keep the old one, try again later
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("%s reload from %s failed: %s", self.what, self.model_dir, self.last_error)
            return "failed"
        self._swap(model)
        self.stamp, self.last_error = stamp, None
        log.info("serving the %s from %s (%s)", self.what, self.model_dir, self._describe(model))
        return "loaded"


class RerankerWatch(CFModelWatch):
    """Reloads the reranker when its bundle changes: ``OSRECO_RERANK_BUNDLE`` naming a link
    (``<bundles_root>/reranker/current``, switched by ``osreco learn --finetune``) that now points
    at another bundle, or a manifest rewritten in place.

    Args:
        model_dir: the reranker bundle path as configured (the link, not its target).
        swap: receives the newly loaded reranker.
        load: bundle folder -> reranker.
    """

    def _stamp(self) -> tuple[int, int] | None:
        try:
            target = os.path.realpath(self.model_dir)
            st = os.stat(Path(target) / "manifest.json")
        except OSError:
            return None
        return (hash(target), st.st_mtime_ns)

    what = "reranker"

    def _source(self) -> str:
        return os.path.realpath(self.model_dir)

    def _describe(self, model: Any) -> str:
        return f"artifact {getattr(model, 'artifact_id', None)}"
