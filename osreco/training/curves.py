"""Per-epoch training metrics: CSV, JSON, TensorBoard event files (when installed), PNG curves.

``history`` is a list of dicts, one per epoch (epoch 0 = before training), with the same
numeric keys, for example ``{"epoch": 1, "step": 40, "train_loss": 1.2, "dev_loss": 1.3,
"dev_mrr": 0.41}``. Keys missing from a row are written empty.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CurveFiles", "write_curves", "tensorboard_available"]


@dataclass(frozen=True)
class CurveFiles:
    """Where the metrics went; ``tensorboard_dir`` is None when tensorboard is not installed."""

    csv: Path
    json: Path
    png: Path | None
    tensorboard_dir: Path | None


def _columns(history: list[dict]) -> list[str]:
    """All keys in first-seen order, ``epoch`` and ``step`` first."""
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    head = [c for c in ("epoch", "step") if c in cols]
    return head + [c for c in cols if c not in head]


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be used (it needs the ``tensorboard`` package)."""
    return importlib.util.find_spec("tensorboard") is not None


def _write_tensorboard(history: list[dict], out_dir: Path, prefix: str) -> Path | None:
    """Write scalars per epoch to TensorBoard event files; None when tensorboard is absent."""
    if not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter  # lazy: needs torch and tensorboard

    tb_dir = out_dir / "tensorboard"
    writer = SummaryWriter(log_dir=str(tb_dir))
    try:
        for row in history:
            step = int(row.get("epoch", 0) if prefix == "metrics" else row.get("step", 0))
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    writer.add_scalar(f"{prefix}/{key}", float(value), step)
    finally:
        writer.close()
    return tb_dir


def _write_png(history: list[dict], path: Path, title: str, x: str = "epoch") -> Path | None:
    """Plot losses (left) and ranking/accuracy metrics (right) against ``x`` (epoch or step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row.get(x, i) for i, row in enumerate(history)]
    cols = [c for c in _columns(history) if c not in ("epoch", "step", "seconds", "lr")]
    losses = [c for c in cols if "loss" in c]
    scores = [c for c in cols if c not in losses]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, label in ((axes[0], losses, "loss"), (axes[1], scores, "metric")):
        for key in keys:
            points = [(e, r[key]) for e, r in zip(epochs, history)
                      if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_curves(history: list[dict], out_dir: str | Path, name: str = "metrics",
                 title: str = "training", png: bool = True, x: str = "epoch") -> CurveFiles:
    """Write the per-epoch history as ``<name>.csv``, ``<name>.json``, ``<name>.png``.

    Args:
        history: one dict of numbers per epoch.
        out_dir: folder to write into (created).
        name: file stem.
        title: the chart's title.
        png: whether to draw the PNG (matplotlib, Agg backend).
        x: the row key on the charts' x axis (``epoch``, or ``step`` for per-step logs).

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = _columns(history)
    csv_path, json_path = out / f"{name}.csv", out / f"{name}.json"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, restval="")
        writer.writeheader()
        writer.writerows(history)
    json_path.write_text(json.dumps(history, indent=2), encoding="utf-8")
    png_path = _write_png(history, out / f"{name}.png", title, x) if png and history else None
    return CurveFiles(csv_path, json_path, png_path, _write_tensorboard(history, out, name))
