"""``osreco eval --tasks image``: search by photo and text-to-image on the synthetic shop.

The shop (``osreco.ingest.synthetic_shop``) is indexed with the tiny CLIP trained on its
*training* items (``osreco.training.image_text.shop_bundle``), pictures embedded by the ingest
image stage, and every query goes through the real sidecar app. Only held-out combinations
(colour × shape × pattern never seen in training) are asked for:

* text-to-image: ``"<colour> <pattern> <shape>"``, pictures only (the ``text_image`` signal
  alone: BM25 and the text meaning weighted 0, since titles spell the answer), Recall@10 of the
  items of that combination;
* photo-to-item: a new photo of a held-out item, Precision@5 of "same colour and shape";
* fusion: a photo of the colour and shape (another print) plus the print in words — photo alone,
  words alone and both fused, Recall@10 of the exact combination.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from osreco.evaluation.metrics import recall_uncapped_at_k

TARGETS = {"text_to_image_recall@10": 0.8, "photo_precision@5": 0.8}


def _png(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def index_shop(client: Any, bundle: Any, alias: str) -> int:
    """(Re)build the shop's index behind ``alias`` with text and image vectors; returns items indexed."""
    from osreco.exporter.encoder import Encoder
    from osreco.ingest.catalog import FieldMap, validate_row
    from osreco.ingest.index_spec import IndexSpec
    from osreco.ingest.rebuild import ensure_index
    from osreco.ingest.synthetic_shop import render, shop_items
    from osreco.ingest.writer import WriteConfig, index_items

    enc = Encoder(bundle, threads=2)
    spec = replace(IndexSpec.from_encoder(enc, alias).with_fields(facets=("shape", "pattern")),
                   image_dim=enc.dim, image_artifact_id=enc.artifact_id)
    fields = FieldMap(facets={f: f for f in ("color", "shape", "pattern", "brand", "category")}, image="image")
    items = shop_items()
    pictures = {i.item_id: render(i) for i in items}
    entries = [validate_row(i.row(f"shop/{i.item_id}.png"), n + 1, fields) for n, i in enumerate(items)]
    # the pictures are drawn in memory rather than fetched (tests cover the fetching image stage)
    vectors = enc.encode_images([pictures[e.item_id] for e in entries], batch_size=64)
    embedded = [replace(e, fields=dict(e.fields, image_embedding=[float(x) for x in v],
                                       image_hash=f"render:{e.item_id}")) for e, v in zip(entries, vectors)]
    client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True,
                          expand_wildcards="all")
    report = index_items(client, enc, ensure_index(client, spec), embedded, WriteConfig(refresh=True))
    return int(report.indexed)


def _recall(ranked: list[str], relevant: set[str], k: int) -> float:
    return recall_uncapped_at_k(ranked, relevant, k)


def _precision(ranked: list[str], relevant: set[str], k: int) -> float:
    return sum(1 for i in ranked[:k] if i in relevant) / k


def run_image_eval(opensearch: Any, alias: str = "osreco-eval-images", bundle: Any = None,
                   report: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Index the shop, then measure the three tasks through the sidecar. Returns the report section."""
    from osreco.ingest.connection import connect
    from osreco.ingest.synthetic_shop import render, shop_items
    from osreco.plugin.app import create_app
    from osreco.plugin.config import SidecarConfig
    from osreco.plugin.fusion import FusionSettings
    from osreco.training.image_text import shop_bundle

    bundle = bundle or shop_bundle(report=report)
    client = connect(opensearch)
    n = index_shop(client, bundle, alias)
    items = shop_items()
    by_id = {i.item_id: i for i in items}
    held = [i for i in items if i.held_out]
    # colour, shape and print are not facets here: the query parser would turn the words into
    # filters and the task would measure the parser, not the pictures
    facets = ("brand", "category")

    def app(weights: dict[str, Any]) -> Any:
        fusion = replace(FusionSettings(), cf_weight=0.0, **weights)
        cfg = SidecarConfig(opensearch=opensearch, alias=alias, bundle_dir=str(bundle), image_bundle_dir=str(bundle),
                            dev_mode=True, bundle_reload_s=0, facets=facets, embed_vocabulary=False, fusion=fusion)
        return create_app(cfg).test_client()

    def ids(c: Any, body: dict[str, Any]) -> list[str]:
        resp = c.post("/v1/search", json={"k": 10, **body})
        if resp.status_code != 200:
            raise RuntimeError(f"sidecar answered {resp.status_code}: {resp.get_json()}")
        return [r["item_id"] for r in resp.get_json()["results"]]

    pictures_only = app({"bm25_weight": 0.0, "dense_weight": 0.0, "image_weight": 1.0, "text_image_weight": 1.0})
    fused = app({})
    combos = sorted({i.combo for i in held})
    t2i = []
    for colour, shape, pattern in combos:
        relevant = {i.item_id for i in items if i.combo == (colour, shape, pattern)}
        t2i.append(_recall(ids(pictures_only, {"q": f"{colour} {pattern} {shape}"}), relevant, 10))
    photo = []
    for i in held:
        relevant = {x.item_id for x in items if x.colour == i.colour and x.shape == i.shape}
        photo.append(_precision(ids(pictures_only, {"image": _png(render(i, seed=99))}), relevant, 5))
    alone_photo, alone_text, both = [], [], []
    for colour, shape, pattern in combos:
        other = next(x for x in items if x.colour == colour and x.shape == shape and x.pattern != pattern)
        relevant = {i.item_id for i in items if i.combo == (colour, shape, pattern)}
        pic = _png(render(other, seed=77))
        alone_photo.append(_recall(ids(fused, {"image": pic}), relevant, 10))
        alone_text.append(_recall(ids(fused, {"q": pattern}), relevant, 10))
        both.append(_recall(ids(fused, {"q": pattern, "image": pic}), relevant, 10))
    out: dict[str, Any] = {"items": n, "held_out_items": len(held), "held_out_combinations": len(combos),
           "text_to_image_recall@10": round(float(np.mean(t2i)), 4),
           "photo_precision@5": round(float(np.mean(photo)), 4),
           "fusion_recall@10": {"photo": round(float(np.mean(alone_photo)), 4),
                                "text": round(float(np.mean(alone_text)), 4),
                                "photo+text": round(float(np.mean(both)), 4)},
           "bundle": str(bundle), "examples": [by_id[i.item_id].title for i in held[:3]]}
    fr = out["fusion_recall@10"]
    out["targets"] = [
        {"name": f"image: {k}", "value": out[k], "threshold": v, "met": out[k] >= v} for k, v in TARGETS.items()] + [
        {"name": "image: photo+text fusion recall@10 >= either alone", "value": fr["photo+text"],
         "threshold": max(fr["photo"], fr["text"]), "met": fr["photo+text"] >= max(fr["photo"], fr["text"])}]
    client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="all")
    return out
