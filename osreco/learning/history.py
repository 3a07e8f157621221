"""The learning history: one JSON line per ``osreco learn`` run, a table and a chart of it.

Each line: ``run_id``, ``started``, ``ended``, ``data`` (events, queries, users used), ``changes``
(what was promoted), ``metrics`` (before/after per step), ``promoted`` and ``refused`` (with the
reasons), ``error`` for a run that failed (nothing promoted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from osreco.learning.errors import LearnError

__all__ = ["HISTORY_FILE", "CHART_FILE", "append_run", "read_history", "history_table", "draw_history"]

HISTORY_FILE = "history.jsonl"
CHART_FILE = "history.png"


def append_run(state_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Append ``record`` as one line to ``<state_dir>/history.jsonl`` (flushed and fsynced)."""
    import os

    path = Path(state_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_history(state_dir: str | Path) -> list[dict[str, Any]]:
    """Every run recorded in ``<state_dir>/history.jsonl``, oldest first; a torn last line (a run
    killed while writing) is skipped.

    Raises:
        OsrecoError: the file is missing (exit code 2, with the fix).
    """
    path = Path(state_dir) / HISTORY_FILE
    if not path.is_file():
        raise LearnError(f"no learning history at {path}", fix="run `osreco learn` first (or pass its --state dir)",
                          file=str(path))
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _fusion_metric(run: Mapping[str, Any], which: str) -> float | None:
    """Held-out IPS clicks per request summed over the tuned classes (``current`` or ``tuned``)."""
    classes = ((run.get("metrics") or {}).get("fusion") or {}).get("classes") or {}
    vals = [c["heldout"][which] for c in classes.values() if c.get("heldout")]
    return round(sum(vals), 5) if vals else None


def history_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: one row per run."""
    head = ("run", "started", "s", "events", "queries", "users", "cf", "fusion before->after", "promoted", "refused")
    rows = [head]
    for r in runs:
        data, metrics = r.get("data") or {}, r.get("metrics") or {}
        cf = (metrics.get("cf") or {}).get("mode", "-")
        before, after = _fusion_metric(r, "current"), _fusion_metric(r, "tuned")
        fusion = "-" if before is None else f"{before:.4f}->{after:.4f}"
        rows.append((str(r.get("run_id", ""))[:12], str(r.get("started", ""))[:19], str(r.get("seconds", "")),
                     str(data.get("events", "")), str(data.get("queries", "")), str(data.get("users", "")), cf,
                     fusion, ",".join(r.get("promoted") or []) or "-",
                     "error: " + str(r["error"])[:40] if r.get("error") else str(len(r.get("refused") or []))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def draw_history(runs: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Draw the held-out fusion estimate (current vs tuned) and the data per run as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    xs = list(range(1, len(runs) + 1))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    before = [_fusion_metric(r, "current") for r in runs]
    after = [_fusion_metric(r, "tuned") for r in runs]
    ax1.plot(xs, [float("nan") if v is None else v for v in before], "o-", label="served weights (held-out IPS)")
    ax1.plot(xs, [float("nan") if v is None else v for v in after], "s-", label="tuned weights (held-out IPS)")
    for x, r in zip(xs, runs):
        if "fusion" in (r.get("promoted") or []):
            ax1.axvline(x, color="green", alpha=0.2)
    ax1.set_ylabel("clicks / request (IPS)")
    ax1.legend(loc="best", fontsize=8)
    ax1.set_title("osreco learn: fusion tuning per run (green: weights promoted)")
    ax2.bar([x - 0.2 for x in xs], [(r.get("data") or {}).get("events", 0) for r in runs], width=0.4, label="events")
    ax2.bar([x + 0.2 for x in xs], [(r.get("data") or {}).get("queries", 0) for r in runs], width=0.4,
            label="queries")
    ax2.set_xlabel("run")
    ax2.set_ylabel("new data")
    ax2.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
