"""Fine-tune a bi-encoder on feedback: training pairs from events, in-batch negatives, dev split.

Pairs are ``query -> clicked/purchased item`` and ``a user's item -> their next liked item``
(time-ordered). Training is plain PyTorch with mean pooling and L2 normalization (what the
packaged all-MiniLM-L6-v2 computes), and a multiple-negatives ranking loss: each anchor must
pick its own positive among every positive of the batch; other positives of an identical
anchor, or identical positive texts, are masked out so they are not counted as negatives.
torch and transformers are imported inside the functions only.

Example:
    >>> pairs = build_pairs(events, catalog)
    >>> train, dev = split_pairs(pairs, dev_fraction=0.1)
    >>> result = train_encoder(EncoderTrainConfig(base_dir=minilm, out_dir="ft"), train, dev)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from osreco.exporter.errors import ConfigError
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

__all__ = ["Pair", "PairConfig", "build_pairs", "split_pairs", "EncoderTrainConfig",
           "EncoderTrainResult", "train_encoder", "pair_loss", "load_bi_encoder", "embed_texts"]


class _HasUser(Protocol):
    """What :func:`split_pairs` reads: training pairs and reranker examples both have it."""

    @property
    def user_id(self) -> str: ...


P = TypeVar("P", bound=_HasUser)


@dataclass(frozen=True)
class Pair:
    """One training pair: the anchor text should embed close to the positive text."""

    anchor: str
    positive: str
    kind: str  # "query" or "next_item"
    user_id: str
    item_id: str
    weight: float = 1.0  # the pair's share of the loss (inverse propensity of a logged click)


@dataclass(frozen=True)
class PairConfig:
    """Which pairs :func:`build_pairs` makes.

    Args:
        queries: make ``query -> item`` pairs from positive events that carry a query.
        next_items: make ``item -> next item`` pairs from each user's positive timeline.
        max_next_per_user: cap on next-item pairs per user (the most recent are kept).
    """

    queries: bool = True
    next_items: bool = True
    max_next_per_user: int = 20

    def __post_init__(self) -> None:
        if not (self.queries or self.next_items):
            raise ConfigError("PairConfig makes no pairs", fix="enable queries or next_items")
        if self.max_next_per_user < 0:
            raise ConfigError(f"max_next_per_user must be >= 0, got {self.max_next_per_user}")


def build_pairs(events: Iterable[dict], catalog: dict[str, TrainingItem],
                config: PairConfig = PairConfig()) -> list[Pair]:
    """Turn feedback events into de-duplicated training pairs.

    Args:
        events: event dicts (user_id, item_id, kind, value, timestamp, query?).
        catalog: item id -> item; events on unknown items are ignored.
        config: which pairs to make.

    Returns:
        Pairs in a deterministic order (query pairs, then next-item pairs, by user and time).
    """
    seen: set[tuple[str, str]] = set()
    query_pairs: list[Pair] = []
    timelines: dict[str, list[tuple[float, str]]] = {}
    for e in events:
        item = catalog.get(e["item_id"])
        if item is None or not is_positive(e):
            continue
        query = (e.get("query") or "").strip()
        if query and config.queries and (query, item.item_id) not in seen:
            seen.add((query, item.item_id))
            query_pairs.append(Pair(query, item.document, "query", e["user_id"], item.item_id))
        if not query:
            timelines.setdefault(e["user_id"], []).append((float(e.get("timestamp") or 0), item.item_id))
    next_pairs: list[Pair] = []
    if config.next_items:
        for user in sorted(timelines):
            next_pairs.extend(_next_item_pairs(user, timelines[user], catalog, config.max_next_per_user))
    return query_pairs + next_pairs


def _next_item_pairs(user: str, timeline: list[tuple[float, str]], catalog: dict[str, TrainingItem],
                     cap: int) -> list[Pair]:
    """Consecutive (item, next item) pairs of one user's time-ordered positive items."""
    ordered = [item_id for _, item_id in sorted(timeline)]
    out = [Pair(catalog[a].document, catalog[b].document, "next_item", user, b)
           for a, b in zip(ordered, ordered[1:]) if a != b]
    return out[-cap:] if cap else []


def split_pairs(pairs: list[P], dev_fraction: float = 0.1, seed: int = 13) -> tuple[list[P], list[P]]:
    """Hold out whole users (by a seeded hash of ``user_id``) as the dev split.

    Args:
        pairs: anything with a ``user_id`` attribute (pairs, reranker examples).
        dev_fraction: expected share of users held out.
        seed: changes which users are held out.

    Returns:
        (train, dev), each in input order.

    Raises:
        ConfigError: when dev_fraction is not in [0, 1).
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise ConfigError(f"dev_fraction must be in [0, 1), got {dev_fraction}")

    def bucket(user: str) -> float:
        digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    train = [p for p in pairs if bucket(p.user_id) >= dev_fraction]
    dev = [p for p in pairs if bucket(p.user_id) < dev_fraction]
    return train, dev


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Fine-tuning options for :func:`train_encoder`.

    Args:
        base_dir: Hugging Face model folder (a sentence-transformers folder is fine).
        out_dir: where the fine-tuned model folder is written (replaced atomically).
        loop: epochs, batch size, learning rate, device, threads, seed, max_steps.
        max_length: token limit for anchors and positives.
        scale: similarity scale (inverse temperature) of the ranking loss.
        dev_max: at most this many dev pairs are evaluated each epoch.
    """

    base_dir: Path
    out_dir: Path
    loop: LoopConfig = field(default_factory=LoopConfig)
    max_length: int = 64
    scale: float = 20.0
    dev_max: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_dir", base_model_dir(self.base_dir))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.max_length < 8 or self.scale <= 0 or self.dev_max < 1:
            raise ConfigError("max_length must be >= 8, scale > 0 and dev_max >= 1",
                              fix="check --max-length / --scale")


@dataclass(frozen=True)
class EncoderTrainResult:
    """What :func:`train_encoder` produced."""

    out_dir: Path
    history: list[dict]
    train_pairs: int
    dev_pairs: int
    device: str


def load_bi_encoder(model_dir: Path, device: str):
    """Load ``AutoModel`` and its tokenizer onto ``device``."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).to(device)
    return model, load_tokenizer(model_dir)


def embed_texts(model, tokenizer, texts: list[str], max_length: int, device: str):
    """Mean-pooled, L2-normalized embeddings (a torch tensor, gradients kept)."""
    import torch

    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt").to(device)
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _false_negative_mask(batch: list[Pair]):
    """True where column j is also a right answer for row i (same anchor or same positive)."""
    import torch

    n = len(batch)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if i != j and (batch[i].anchor == batch[j].anchor or batch[i].positive == batch[j].positive):
                mask[i, j] = True
    return mask


def pair_loss(model, tokenizer, batch: list[Pair], max_length: int, scale: float, device: str):
    """Multiple-negatives ranking loss of one batch: the cross-entropy over anchors, averaged with
    the pairs' weights (a plain mean when every weight is 1)."""
    import torch

    a = embed_texts(model, tokenizer, [p.anchor for p in batch], max_length, device)
    b = embed_texts(model, tokenizer, [p.positive for p in batch], max_length, device)
    logits = scale * a @ b.T
    logits = logits.masked_fill(_false_negative_mask(batch).to(device), float("-inf"))
    labels = torch.arange(len(batch), device=device)
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    weights = torch.tensor([p.weight for p in batch], dtype=losses.dtype, device=device)
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


def _dev_metrics(model, tokenizer, dev: list[Pair], config: EncoderTrainConfig, device: str) -> dict:
    """Dev loss (in-batch) and retrieval MRR / accuracy@1 of each anchor over all dev positives."""
    import torch

    dev = dev[: config.dev_max]
    if not dev:
        return {}
    model.eval()
    with torch.no_grad():
        losses = [pair_loss(model, tokenizer, b, config.max_length, config.scale, device).item()
                  for b in batches(dev, config.loop.batch_size) if len(b) > 1]
        docs = sorted({p.positive for p in dev})
        doc_index = {d: i for i, d in enumerate(docs)}
        vecs = torch.cat([embed_texts(model, tokenizer, c, config.max_length, device)
                          for c in batches(docs, 64)])
        anchors = [p.anchor for p in dev]
        q = torch.cat([embed_texts(model, tokenizer, c, config.max_length, device)
                       for c in batches(anchors, 64)])
        scores = (q @ vecs.T).cpu()
    right: dict[str, set[int]] = {}
    for p in dev:
        right.setdefault(p.anchor, set()).add(doc_index[p.positive])
    rr = []
    for row, p in enumerate(dev):
        own = doc_index[p.positive]
        others = [j for j in right[p.anchor] if j != own]
        s = scores[row].clone()
        s[others] = float("-inf")
        rr.append(1.0 / (1 + int((s > s[own]).sum())))
    out = {"dev_mrr": sum(rr) / len(rr), "dev_acc1": sum(r == 1.0 for r in rr) / len(rr)}
    if losses:
        out["dev_loss"] = sum(losses) / len(losses)
    return out


def train_encoder(config: EncoderTrainConfig, train: list[Pair], dev: list[Pair]) -> EncoderTrainResult:
    """Fine-tune the base encoder on ``train``, evaluating on ``dev`` before and after each epoch.

    Writes ``out_dir`` (model, tokenizer, sentence-transformers pooling config) and
    ``out_dir/training/metrics.{csv,json,png}``.

    Raises:
        ConfigError: fewer than 2 training pairs (in-batch negatives need a batch).
    """
    if len(train) < 2:
        raise ConfigError(f"need at least 2 training pairs, got {len(train)}",
                          fix="pass more events (queries with clicks, or several liked items per user)")
    device = resolve_device(config.loop.device)
    apply_threads(config.loop)
    model, tokenizer = load_bi_encoder(config.base_dir, device)

    def step_loss(batch: list[Pair]):
        return pair_loss(model, tokenizer, batch, config.max_length, config.scale, device)

    steps: list[dict] = []
    history = run_epochs(model, train, config.loop, step_loss,
                         lambda: _dev_metrics(model, tokenizer, dev, config, device),
                         desc="train encoder", step_log=steps)
    meta = {"task": "embedding", "base": str(config.base_dir), "train_pairs": len(train),
            "dev_pairs": len(dev), "device": device, "config": _config_dict(config),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_atomically(config.out_dir, lambda tmp: _save_bi_encoder(model, tokenizer, config.base_dir,
                                                                 tmp, history, steps, meta))
    return EncoderTrainResult(config.out_dir, history, len(train), len(dev), device)


def _config_dict(config: EncoderTrainConfig) -> dict:
    """The config as JSON-able values."""
    d = asdict(config)
    d["base_dir"], d["out_dir"] = str(config.base_dir), str(config.out_dir)
    return d


_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _save_bi_encoder(model, tokenizer, base_dir: Path, out: Path, history: list[dict], steps: list[dict],
                     meta: dict) -> None:
    """Write the model, tokenizer, sentence-transformers config and the training record."""
    from osreco.training.curves import write_curves

    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    for name in _ST_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out / name)
    if (base_dir / "1_Pooling").is_dir():
        shutil.copytree(base_dir / "1_Pooling", out / "1_Pooling")
    if not (out / "modules.json").is_file():
        _write_default_st_config(out, int(model.config.hidden_size))
    write_curves(history, out / "training", "metrics", "bi-encoder fine-tuning")
    write_curves(steps, out / "training", "steps", "bi-encoder fine-tuning, per step", x="step")
    (out / "training" / "training.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _write_default_st_config(out: Path, dim: int) -> None:
    """Mean pooling + Normalize, as all-MiniLM-L6-v2 declares them."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (out / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": dim, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False}
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2), encoding="utf-8")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": False}), encoding="utf-8")

