"""A cross-encoder reranker trained on feedback, its int8 export, and the runtime ``rerank``.

Examples are (query, item text, label): clicks, carts and purchases after a query are
positive, skipped impressions negative, plus ``sampled_negatives`` random catalog items per
positive. The model is a ``BertForSequenceClassification`` with one logit, trained with
binary cross-entropy. :func:`rerank` is pure runtime (numpy + the exporter's ``Encoder``):
the sidecar may call it on its top N fused candidates without loading torch.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from osreco.cf.events import NEGATIVE_KINDS
from osreco.exporter.errors import ConfigError
from osreco.exporter.rerank import rerank  # runtime half, re-exported for training callers
from osreco.training.data import TrainingItem, is_positive
from osreco.training.loop import (
    LoopConfig,
    apply_threads,
    base_model_dir,
    batches,
    load_tokenizer,
    resolve_device,
    run_epochs,
    save_atomically,
)

__all__ = ["RerankExample", "build_rerank_examples", "RerankTrainConfig", "RerankTrainResult",
           "train_reranker", "export_reranker", "rerank", "roc_auc"]


@dataclass(frozen=True)
class RerankExample:
    """One labelled (query, item text) pair."""

    query: str
    text: str
    label: float
    user_id: str
    item_id: str
    weight: float = 1.0  # the example's share of the loss (inverse propensity of a logged click)


def build_rerank_examples(events: Iterable[dict], catalog: dict[str, TrainingItem],
                          sampled_negatives: int = 1, seed: int = 13) -> list[RerankExample]:
    """Labelled pairs from events that carry a query.

    Args:
        events: event dicts; only those with a ``query`` and a known item are used.
        catalog: item id -> item.
        sampled_negatives: random catalog items added as negatives per positive (items that
            were positive for the same query are never sampled).
        seed: seed of the sampling.

    Returns:
        Positives and skips in event order, then the sampled negatives; a (query, item) pair
        that is both clicked and skipped counts as positive only.

    Raises:
        ConfigError: a negative ``sampled_negatives``.
    """
    if sampled_negatives < 0:
        raise ConfigError(f"sampled_negatives must be >= 0, got {sampled_negatives}")
    rows = [e for e in events if (e.get("query") or "").strip() and e["item_id"] in catalog]
    positive = {(e["query"].strip(), e["item_id"]) for e in rows if is_positive(e)}
    seen: set[tuple[str, str]] = set()
    out: list[RerankExample] = []
    for e in rows:
        key = (e["query"].strip(), e["item_id"])
        label = 1.0 if key in positive else 0.0 if e["kind"] in NEGATIVE_KINDS else None
        if label is None or key in seen:
            continue
        seen.add(key)
        out.append(RerankExample(key[0], catalog[key[1]].document, label, e["user_id"], key[1]))
    rng, ids = random.Random(seed), sorted(catalog)
    for ex in [x for x in out if x.label == 1.0]:
        for _ in range(sampled_negatives):
            item_id = rng.choice(ids)
            if (ex.query, item_id) not in positive and (ex.query, item_id) not in seen:
                seen.add((ex.query, item_id))
                out.append(RerankExample(ex.query, catalog[item_id].document, 0.0, ex.user_id, item_id))
    return out


@dataclass(frozen=True)
class RerankTrainConfig:
    """Options of :func:`train_reranker`.

    Args:
        base_dir: a Hugging Face encoder or classification folder (packaged MiniLM, tiny BERT).
        out_dir: where the reranker's model folder is written (atomically).
        loop: optimisation options.
        max_length: token limit of the (query, text) pair.
        dev_max: at most this many dev examples are scored each epoch.
    """

    base_dir: Path
    out_dir: Path
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=3e-5, batch_size=16))
    max_length: int = 96
    dev_max: int = 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_dir", base_model_dir(self.base_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.max_length < 8 or self.dev_max < 1:
            raise ConfigError("max_length must be >= 8 and dev_max >= 1")


@dataclass(frozen=True)
class RerankTrainResult:
    """What :func:`train_reranker` produced."""

    out_dir: Path
    history: list[dict]
    train_examples: int
    dev_examples: int
    device: str


def roc_auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is missing."""
    pos = [s for s, y in zip(scores, labels) if y > 0.5]
    neg = [s for s, y in zip(scores, labels) if y <= 0.5]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _logits(model, tokenizer, batch: list[RerankExample], max_length: int, device: str):
    """One logit per example."""
    enc = tokenizer([x.query for x in batch], [x.text for x in batch], padding=True, truncation=True,
                    max_length=max_length, return_tensors="pt").to(device)
    return model(**enc).logits[:, 0]


def _example_loss(model, tokenizer, batch: list[RerankExample], max_length: int, device: str):
    """Binary cross-entropy of one batch, averaged with the examples' weights."""
    import torch

    labels = torch.tensor([x.label for x in batch], dtype=torch.float32, device=device)
    weights = torch.tensor([x.weight for x in batch], dtype=torch.float32, device=device)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        _logits(model, tokenizer, batch, max_length, device), labels, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


def _dev_metrics(model, tokenizer, dev: list[RerankExample], config: RerankTrainConfig, device: str) -> dict:
    """Dev loss, accuracy (logit > 0) and ROC AUC."""
    import torch

    dev = dev[: config.dev_max]
    if not dev:
        return {}
    model.eval()
    with torch.no_grad():
        logits = torch.cat([_logits(model, tokenizer, b, config.max_length, device)
                            for b in batches(dev, 64)]).cpu()
    labels = torch.tensor([x.label for x in dev])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    acc = float(((logits > 0).float() == labels).float().mean())
    return {"dev_loss": loss, "dev_acc": acc, "dev_auc": roc_auc(logits.tolist(), labels.tolist())}


def load_reranker(model_dir: Path, device: str):
    """A one-logit ``AutoModelForSequenceClassification`` (a new head on an encoder base)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=1, ignore_mismatched_sizes=True)
    return model.to(device), load_tokenizer(model_dir)


def train_reranker(config: RerankTrainConfig, train: list[RerankExample],
                   dev: list[RerankExample]) -> RerankTrainResult:
    """Fine-tune the relevance model; write the model folder and its training curves.

    Raises:
        ConfigError: the training set lacks positives or negatives.
    """
    labels = {x.label for x in train}
    if labels != {0.0, 1.0}:
        raise ConfigError(f"reranker training needs positives and negatives, got labels {sorted(labels)}",
                          fix="add events with queries (clicks and skips) or raise --sampled-negatives")
    device = resolve_device(config.loop.device)
    apply_threads(config.loop)
    model, tokenizer = load_reranker(config.base_dir, device)
    steps: list[dict] = []
    history = run_epochs(model, train, config.loop,
                         lambda b: _example_loss(model, tokenizer, b, config.max_length, device),
                         lambda: _dev_metrics(model, tokenizer, dev, config, device), desc="train reranker",
                         step_log=steps)
    meta = {"task": "classification", "base": str(config.base_dir), "train_examples": len(train),
            "dev_examples": len(dev), "device": device,
            "config": {**asdict(config), "base_dir": str(config.base_dir), "out_dir": str(config.out_dir)},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def write(tmp: Path) -> None:
        from osreco.training.curves import write_curves

        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_curves(history, tmp / "training", "metrics", "reranker fine-tuning")
        write_curves(steps, tmp / "training", "steps", "reranker fine-tuning, per step", x="step")
        (tmp / "training" / "training.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    save_atomically(config.out_dir, write)
    return RerankTrainResult(config.out_dir, history, len(train), len(dev), device)


def export_reranker(model_dir: str | Path, bundle_dir: str | Path, quantize: str | None = "int8",
                    overwrite: bool = False, threads: int = 2, report=None):
    """Export the trained reranker with the exporter (validated; int8 by default).

    Returns:
        The bundle's ``Manifest`` (task ``classification``).

    Raises:
        osreco.exporter errors: export or parity validation failed (no bundle is left).
    """
    from osreco.exporter import ExportOptions, export_model

    options = ExportOptions(quantize=quantize, overwrite=overwrite, threads=threads,
                            model_name=Path(model_dir).name)
    return export_model(model_dir, bundle_dir, options, report=report)
