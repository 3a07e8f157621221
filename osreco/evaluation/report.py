"""The report of ``osreco eval``: targets, markdown tables and the chart.

The report is a plain JSON-friendly dict (see :func:`osreco.evaluation.run.run_eval`)::

    {"recommendation": {"k", "users", "validation_users", "variants": {name: {"recall", "ndcg",
                        "recall_binary", "ndcg_binary", "coverage"}} (served and "offline *" rows),
                        "tuning": {"grid": {name: ndcg_binary}, "chosen": {setting: weight}}},
     "similar": {"k", "cases", "similar_cf_weight", "variants": {name: {"hr", "ndcg"}}},
     "listings": {"k", "queries", "skipped", "variants": {name: {"ndcg", "ndcg_binary"}}},
     "search": {"k", "queries", "pairs", "variants": {name: {"ndcg", "recall", "violation_rate"}},
                "by_language": {lang: {name: {...}}}, "by_class": {query class: {name: {...}}},
                "tuning": {"pairs", "validation_users", "grid": {variant: {class: ndcg}},
                           "chosen": {class: weight}}},
     "intent": {"golden", "cases", "languages": {lang: {"cases", "exact", "accuracy"}}},
     "targets": [{"name", "value", "threshold", "met"}], "config": {...}, "seconds": {...}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["compute_targets", "to_markdown", "write_chart", "numbers_in_unit_interval"]

REC_METRICS = ("ndcg_binary", "recall_binary", "ndcg", "recall", "coverage")
SIMILAR_METRICS = ("hr", "ndcg")
LISTING_METRICS = ("ndcg", "ndcg_binary")
SERVED_REC = "osreco"          # the served /v1/recommend with the configured weights
OFFLINE_PREFIX = "offline "    # rows of the offline CF models of the same run
REC_OVER_POPULARITY = 1.75     # served recommend NDCG@10 (binary) over popularity
SIMILAR_OVER_CONTENT = 1.3     # similar items' blend HR@10 over content only
LISTING_OVER_INDEX = 1.5       # anonymous listings' NDCG@10 over item-id order
SEARCH_METRICS = ("ndcg", "recall", "violation_rate")
SINGLE_SIGNALS = ("bm25", "knn")
PERSONALIZATION_GAIN = 1.05  # osreco NDCG@10 over intent+hybrid without the user, per language


def compute_targets(report: Mapping[str, object]) -> list[dict[str, object]]:
    """The quality targets, each with its measured value and whether it is met.

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
    for lang, rows in (search.get("by_language", {}) if isinstance(search, Mapping) else {}).items():
        if "osreco" in rows and "intent+hybrid" in rows:
            anon, full = rows["intent+hybrid"]["ndcg"], rows["osreco"]["ndcg"]
            ratio = full / anon if anon > 0 else (math.inf if full > 0 else 1.0)
            out.append({"name": f"osreco NDCG@10 / intent+hybrid without the user ({lang}, search)",
                        "value": ratio, "threshold": PERSONALIZATION_GAIN, "met": ratio >= PERSONALIZATION_GAIN})
    out += _ranking_targets(report)
    return out


def _ratio(value: float, base: float) -> float:
    """``value / base``; inf when only the base is 0, 1 when both are."""
    return value / base if base > 0 else (math.inf if value > 0 else 1.0)


def _rows(report: Mapping[str, object], section: str) -> Mapping[str, Mapping[str, float]]:
    part = report.get(section) or {}
    return part.get("variants", {}) if isinstance(part, Mapping) else {}


def _ranking_targets(report: Mapping[str, object]) -> list[dict[str, object]]:
    """Targets of the recommendation, similar-items and anonymous-listing sections."""
    out: list[dict[str, object]] = []
    rec = _rows(report, "recommendation")
    offline = [v["ndcg_binary"] for name, v in rec.items() if name.startswith(OFFLINE_PREFIX)]
    if SERVED_REC in rec and offline:
        r = _ratio(rec[SERVED_REC]["ndcg_binary"], max(offline))
        out.append({"name": "served recommend NDCG@10 (binary) / best offline CF model of the same split",
                    "value": r, "threshold": 1.0, "met": r >= 1.0})
    if SERVED_REC in rec and "popularity" in rec:
        r = _ratio(rec[SERVED_REC]["ndcg_binary"], rec["popularity"]["ndcg_binary"])
        out.append({"name": "served recommend NDCG@10 (binary) / popularity", "value": r,
                    "threshold": REC_OVER_POPULARITY, "met": r >= REC_OVER_POPULARITY})
    sim = _rows(report, "similar")
    if "blend" in sim and "content" in sim:
        r = _ratio(sim["blend"]["hr"], sim["content"]["hr"])
        out.append({"name": "similar items blend HR@10 / content only", "value": r,
                    "threshold": SIMILAR_OVER_CONTENT, "met": r >= SIMILAR_OVER_CONTENT})
    lst = _rows(report, "listings")
    if "osreco" in lst and "index order" in lst:
        r = _ratio(lst["osreco"]["ndcg"], lst["index order"]["ndcg"])
        out.append({"name": "anonymous listings NDCG@10 / index order", "value": r,
                    "threshold": LISTING_OVER_INDEX, "met": r >= LISTING_OVER_INDEX})
    return out


def _table(title: str, rows: Mapping[str, Mapping[str, float]], metrics: tuple[str, ...],
           baseline: str | None, ratio_of: str = "ndcg") -> list[str]:
    head = ["variant", *metrics]
    if baseline and baseline in rows:
        head.append(f"{'NDCG' if ratio_of == 'ndcg' else ratio_of} vs {baseline}")
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, vals in rows.items():
        cells = [name] + [f"{vals[m]:.4f}" for m in metrics]
        if baseline and baseline in rows:
            base = rows[baseline][ratio_of]
            cells.append(f"{vals[ratio_of] / base:.2f}x" if base > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _tuning(tuning: Mapping[str, Any] | None) -> list[str]:
    """The validation grid of the taste weights and the weights chosen per query class."""
    if not tuning:
        return []
    classes = sorted({c for row in tuning["grid"].values() for c in row})
    lines = [f"### Taste weights tuned on validation users ({tuning.get('validation_users', '?')} users, "
             f"{tuning['pairs']} pairs; the tables above are the other, test users)", ""]
    if classes:
        lines += ["| grid | " + " | ".join(f"NDCG {c}" for c in classes) + " |", "|" + "---|" * (len(classes) + 1)]
        for name, row in tuning["grid"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" if c in row else "-" for c in classes) + " |")
        lines.append("")
    chosen = ", ".join(f"{c} {w:g}" for c, w in tuning["chosen"].items())
    return lines + [f"Chosen taste weight per query class (classes without validation pairs keep the configured "
                    f"value): {chosen}; neighbours weight in listings: {tuning.get('neighbors_weight', 0.0):g}.", ""]


def _ranking_tables(report: Mapping[str, Any]) -> list[str]:
    """The recommendation (served next to offline), similar-items and anonymous-listing tables."""
    lines: list[str] = []
    rec = report.get("recommendation")
    if rec:
        lines += _table(f"Recommendation without a query (k={rec['k']}, {rec['users']} test users; binary: every "
                        "held-out item relevant, graded: by rating; offline rows: CF models of the same split)",
                        rec["variants"], REC_METRICS, "popularity", "ndcg_binary")
        tuning = rec.get("tuning") or {}
        if tuning.get("grid"):
            chosen = ", ".join(f"{k} {v:g}" for k, v in tuning["chosen"].items())
            lines += [f"Served blend weights tuned on {rec.get('validation_users', '?')} validation users "
                      f"(NDCG@{rec['k']} binary): " + ", ".join(f"{n} {v:.4f}" for n, v in tuning["grid"].items())
                      + f"; chosen: {chosen} (`osreco (tuned)`).", ""]
    sim = report.get("similar")
    if sim:
        lines += _table(f"Similar items: next-item prediction (k={sim['k']}, {sim['cases']} test users; query = "
                        f"last training item, target = first held-out item; served co-engagement weight "
                        f"{sim.get('similar_cf_weight', '?')})", sim["variants"], SIMILAR_METRICS, "content", "hr")
    lst = report.get("listings")
    if lst:
        lines += _table(f"Anonymous filtered listings (k={lst['k']}, {lst['queries']} listing queries, no user; "
                        "relevant: matching items held out by any user, graded by how many)",
                        lst["variants"], LISTING_METRICS, "index order")
    return lines


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: one table per task, then the targets.

    Args:
        report: the report dict.

    Returns:
        Markdown text.
    """
    lines: list[str] = []
    lines += _ranking_tables(report)
    search = report.get("search")
    if search:
        singles = [s for s in SINGLE_SIGNALS if s in search["variants"]]
        best = max(singles, key=lambda s: search["variants"][s]["ndcg"]) if singles else None
        lines += _table(f"Personalized search (k={search['k']}, {search['queries']} queries, "
                        f"{search['pairs']} query-user pairs)", search["variants"], SEARCH_METRICS, best)
        for lang, rows in search.get("by_language", {}).items():
            lines += _table(f"Personalized search, {lang} queries only", rows, SEARCH_METRICS, None)
        for cls, rows in search.get("by_class", {}).items():
            lines += _table(f"Personalized search, query class {cls} ({search.get('classes', {}).get(cls, '?')} "
                            "pairs)", rows, SEARCH_METRICS, None)
        lines += _tuning(search.get("tuning"))
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
    metric_names = set(REC_METRICS) | set(SEARCH_METRICS) | set(SIMILAR_METRICS) | set(LISTING_METRICS) | \
        {"accuracy"}

    def walk(node: object, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in metric_names and not isinstance(value, Mapping):
                    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0
                    if not ok:
                        bad.append(f"{where}.{key}={value!r}")
                else:
                    walk(value, f"{where}.{key}")

    for section in ("recommendation", "similar", "listings", "search", "intent"):
        walk(report.get(section), section)
    return bad
