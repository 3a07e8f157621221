"""The report of ``osreco eval``: targets, markdown tables and the chart.

The report is a plain JSON-friendly dict (see :func:`osreco.evaluation.run.run_eval`)::

    {"recommendation": {"k", "users", "variants": {name: {"recall", "ndcg", "coverage"}}},
     "search": {"k", "queries", "pairs", "variants": {name: {"ndcg", "recall", "violation_rate"}},
                "by_language": {lang: {name: {...}}}},
     "intent": {"golden", "cases", "languages": {lang: {"cases", "exact", "accuracy"}}},
     "targets": [{"name", "value", "threshold", "met"}], "config": {...}, "seconds": {...}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["compute_targets", "to_markdown", "write_chart", "numbers_in_unit_interval"]

REC_METRICS = ("recall", "ndcg", "coverage")
SEARCH_METRICS = ("ndcg", "recall", "violation_rate")
SINGLE_SIGNALS = ("bm25", "knn")


def compute_targets(report: Mapping[str, object]) -> list[dict[str, object]]:
    """The three quality targets, each with its measured value and whether it is met.

    Args:
        report: a report with ``search`` and ``recommendation`` sections.

    Returns:
        ``[{"name", "value", "threshold", "met"}]``; a section that is missing yields no target.
    """
    out: list[dict[str, object]] = []
    search = report.get("search") or {}
    variants = search.get("variants", {}) if isinstance(search, Mapping) else {}
    if "osreco" in variants and any(s in variants for s in SINGLE_SIGNALS):
        best = max(variants[s]["ndcg"] for s in SINGLE_SIGNALS if s in variants)
        full = variants["osreco"]["ndcg"]
        gain = (full / best - 1.0) if best > 0 else (math.inf if full > 0 else 0.0)
        out.append({"name": "osreco NDCG@10 gain over the best single signal (search)",
                    "value": gain, "threshold": 0.10, "met": gain >= 0.10})
        viol = variants["osreco"]["violation_rate"]
        out.append({"name": "osreco constraint violation rate (search)", "value": viol,
                    "threshold": 0.0, "met": viol == 0.0})
    rec = report.get("recommendation") or {}
    rvars = rec.get("variants", {}) if isinstance(rec, Mapping) else {}
    if "blend" in rvars and "cf" in rvars:
        diff = rvars["blend"]["ndcg"] - rvars["cf"]["ndcg"]
        out.append({"name": "blend NDCG@10 minus CF NDCG@10 (recommendation)", "value": diff,
                    "threshold": 0.0, "met": diff >= 0.0})
    return out


def _table(title: str, rows: Mapping[str, Mapping[str, float]], metrics: tuple[str, ...],
           baseline: str | None) -> list[str]:
    head = ["variant", *metrics]
    if baseline and baseline in rows:
        head.append(f"NDCG vs {baseline}")
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, vals in rows.items():
        cells = [name] + [f"{vals[m]:.4f}" for m in metrics]
        if baseline and baseline in rows:
            base = rows[baseline]["ndcg"]
            cells.append(f"{vals['ndcg'] / base:.2f}x" if base > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: one table per task, then the targets.

    Args:
        report: the report dict.

    Returns:
        Markdown text.
    """
    lines: list[str] = []
    rec = report.get("recommendation")
    if rec:
        lines += _table(f"Recommendation without a query (k={rec['k']}, {rec['users']} test users)",
                        rec["variants"], REC_METRICS, "popularity")
    search = report.get("search")
    if search:
        singles = [s for s in SINGLE_SIGNALS if s in search["variants"]]
        best = max(singles, key=lambda s: search["variants"][s]["ndcg"]) if singles else None
        lines += _table(f"Personalized search (k={search['k']}, {search['queries']} queries, "
                        f"{search['pairs']} query-user pairs)", search["variants"], SEARCH_METRICS, best)
        for lang, rows in search.get("by_language", {}).items():
            lines += _table(f"Personalized search, {lang} queries only", rows, SEARCH_METRICS, None)
    intent = report.get("intent")
    if intent:
        for section in (intent, intent.get("templated")):
            if not section:
                continue
            lines += [f"### Intent parsing: exact match of extracted filters ({section['golden']})", "",
                      "| language | cases | exact | accuracy |", "|---|---|---|---|"]
            for lang, vals in section["languages"].items():
                lines.append(f"| {lang} | {vals['cases']} | {vals['exact']} | {vals['accuracy']:.4f} |")
            lines.append("")
    targets = report.get("targets") or []
    if targets:
        lines += ["### Targets", "", "| target | value | threshold | met |", "|---|---|---|---|"]
        for t in targets:
            lines.append(f"| {t['name']} | {t['value']:.4f} | {t['threshold']} | "
                         f"{'yes' if t['met'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


def write_chart(report: Mapping[str, Any], path: str | Path) -> Path:
    """Bar charts of NDCG@10 and Recall@10 per variant, one panel per task (matplotlib Agg).

    Args:
        report: the report dict.
        path: PNG file to write (its folder is created).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in (("recommendation", "Recommendation (no query)"),
                                               ("search", "Personalized search"))
              if report.get(key)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        variants = report[key]["variants"]
        names = list(variants)
        xs = range(len(names))
        width = 0.38
        ax.bar([x - width / 2 for x in xs], [variants[n]["ndcg"] for n in names], width, label="NDCG@10")
        ax.bar([x + width / 2 for x in xs], [variants[n]["recall"] for n in names], width, label="Recall@10")
        ax.set_xticks(list(xs), names, rotation=20)
        ax.set_ylim(0, max(0.05, max(max(v["ndcg"], v["recall"]) for v in variants.values()) * 1.2))
        ax.set_title(title)
        ax.legend()
    fig.suptitle("osreco eval on MovieLens-100k (time-ordered split per user)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def numbers_in_unit_interval(report: Mapping[str, object]) -> list[str]:
    """Paths of metric values that are not finite numbers in [0, 1] (empty when all are).

    Checks every value under ``recommendation``, ``search`` and ``intent`` whose key is a
    metric name; counts and timings are not metrics.
    """
    bad: list[str] = []
    metric_names = set(REC_METRICS) | set(SEARCH_METRICS) | {"accuracy"}

    def walk(node: object, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in metric_names and not isinstance(value, Mapping):
                    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0
                    if not ok:
                        bad.append(f"{where}.{key}={value!r}")
                else:
                    walk(value, f"{where}.{key}")

    for section in ("recommendation", "search", "intent"):
        walk(report.get(section), section)
    return bad
