"""``osreco simulate``: the command, the day-by-day table, the chart and the targets."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from osreco.cli_errors import command
from osreco.errors import EXIT_FAILURES, EXIT_OK

NDCG_TARGET = 1.10
"""Next-day NDCG@k of the learning arm over the frozen arm after the simulated days."""
LEARN_BUDGET_S = 600.0
"""One learn run on a day of traffic must fit in this many seconds."""


def _curve(result: Mapping[str, Any]) -> list[float] | None:
    """The position model's examination curve in a learn result, when it reports one."""
    for key in ("propensity", "position_model", "position_bias"):
        value = result.get(key)
        if isinstance(value, Mapping):
            value = value.get("curve") or value.get("examination") or value.get("propensity")
        if isinstance(value, Sequence) and value and all(isinstance(x, (int, float)) for x in value):
            return [round(float(x), 4) for x in value]
    return None


def _fusion(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The fusion-tuning part of a learn result (tuned vs hand weights on held-out traffic)."""
    value = result.get("fusion") or result.get("tune")
    return value if isinstance(value, Mapping) else None


def compute_targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as measured by this run: ``{"name", "value", "target", "met", "note"}``."""
    days = report["days"]
    last = days[-1]
    frozen, learning = last["frozen"]["ndcg"], last["learning"]["ndcg"]
    ratio = learning / frozen if frozen else 0.0
    out: list[dict[str, Any]] = [{
        "name": f"next-day NDCG@{report['config']['k']} learning / frozen after {report['config']['days']} days",
        "value": round(ratio, 4), "target": f">= {NDCG_TARGET}", "met": ratio >= NDCG_TARGET,
        "note": f"day {last['day']}: learning {learning:.4f}, frozen {frozen:.4f}"}]
    learns = [d["learn"] for d in days if isinstance(d.get("learn"), Mapping)]
    if learns:
        seconds = report["seconds"].get("learn_max") or 0.0
        out.append({"name": "one learn run on a day of traffic (s)", "value": seconds,
                    "target": f"<= {LEARN_BUDGET_S:.0f}", "met": seconds <= LEARN_BUDGET_S,
                    "note": f"slowest of {len(learns)} runs"})
        fusion = [f for f in (_fusion(r) for r in learns) if f]
        if fusion:
            tuned, hand = fusion[-1].get("tuned"), fusion[-1].get("hand") or fusion[-1].get("current")
            met = isinstance(tuned, (int, float)) and isinstance(hand, (int, float)) and tuned >= hand
            out.append({"name": "tuned fusion weights vs hand weights on held-out traffic",
                        "value": tuned, "target": f">= {hand}", "met": bool(met),
                        "note": json.dumps(fusion[-1], default=str)[:300]})
        curve = next((c for c in (_curve(r) for r in reversed(learns)) if c), None)
        if curve is not None:
            known = report["bias_curve"]["examination"]
            n = min(len(curve), len(known))
            err = max(abs(curve[i] / curve[0] - known[i] / known[0]) for i in range(n)) if n and curve[0] else 1.0
            out.append({"name": "position model vs the simulator's bias curve (max abs error, relative to pos 1)",
                        "value": round(err, 4), "target": "<= 0.1", "met": err <= 0.1,
                        "note": f"estimated {curve[:n]}, known {known[:n]}"})
    return out


def to_markdown(report: Mapping[str, Any]) -> str:
    """The day-by-day table (both arms side by side), the bias curve and the targets."""
    k = report["config"]["k"]
    lines = [f"# osreco simulate: {report['config']['days']} days, {report['config']['users_per_day']} users/day, "
             f"seed {report['config']['seed']}", "",
             f"| day | NDCG@{k} frozen | NDCG@{k} learning | ratio | CTR frozen | CTR learning | "
             f"search NDCG f / l | recommend NDCG f / l | learn s |", "|---|---|---|---|---|---|---|---|---|"]
    for d in report["days"]:
        f, lr = d["frozen"], d["learning"]
        ratio = lr["ndcg"] / f["ndcg"] if f["ndcg"] else 0.0
        label = f"{d['day']} (next day)" if d.get("measured_only") else str(d["day"])
        lines.append(f"| {label} | {f['ndcg']:.4f} | {lr['ndcg']:.4f} | {ratio:.3f} | {f['ctr']:.4f} | "
                     f"{lr['ctr']:.4f} | {f['ndcg_search']:.4f} / {lr['ndcg_search']:.4f} | "
                     f"{f['ndcg_recommend']:.4f} / {lr['ndcg_recommend']:.4f} | {d.get('learn_s', '-')} |")
    curve = report["bias_curve"]
    lines += ["", f"Simulator's position bias (examination of position p = p^-{curve['eta']}): "
              + ", ".join(f"{x:.3f}" for x in curve["examination"]), "", "| target | value | target | met | note |",
              "|---|---|---|---|---|"]
    for t in report.get("targets", []):
        lines.append(f"| {t['name']} | {t['value']} | {t['target']} | {'yes' if t['met'] else 'NO'} | {t['note']} |")
    lines.append(f"\n{report['seconds']['total']} s in all.")
    return "\n".join(lines) + "\n"


def write_chart(report: Mapping[str, Any], path: Path) -> Path:
    """NDCG@k and CTR per day for both arms (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d["day"] for d in report["days"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "ndcg", f"NDCG@{report['config']['k']}"), (axes[1], "ctr", "CTR")):
        for arm, style in (("frozen", "o--"), ("learning", "o-")):
            ax.plot(days, [d[arm][metric] for d in report["days"]], style, label=arm)
        ax.axvline(report["config"]["days"] + 0.5, color="grey", linewidth=0.8)
        ax.set_xlabel("day (after the line: measured only)")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("osreco simulate: frozen day-0 system vs learning system")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@command("simulate")
@click.option("--days", type=click.IntRange(1, 60), default=7, show_default=True,
              help="Days of traffic learned from (the day after is measured too).")
@click.option("--users-per-day", type=click.IntRange(1, 943), default=None,
              help="Users active each day, the same in both arms (default 60; --quick 12).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of users, queries and clicks.")
@click.option("--eta", type=click.FloatRange(0.0, 5.0), default=1.0, show_default=True,
              help="Position-bias exponent of the choice model (examination = position^-eta).")
@click.option("--explore", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="Share of pages both arms explore by random adjacent swaps (OSRECO_EXPLORE_FRACTION).")
@click.option("--quick", is_flag=True, help="A small run for tests: 2 days of 12 users.")
@click.option("--no-learn", is_flag=True, help="Never run osreco learn (both arms frozen: an A/A check).")
@click.option("--prefix", default="osreco-sim", show_default=True, help="Index prefix of the two arms.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="osreco-simulate", show_default=True,
              help="Folder for simulate-report.json/.md, simulate-chart.png, the arms' CF models and learn state.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail-on-targets", is_flag=True, help="Exit 1 when a target is missed.")
def simulate_command(days: int, users_per_day: int | None, seed: int, eta: float, explore: float, quick: bool,
                     no_learn: bool, prefix: str, out_dir: str, as_json: bool, fail_on_targets: bool) -> None:
    """Replay MovieLens-100k users as days of traffic through two real sidecars: frozen and learning.

    Each day the same seeded users search (English and Chinese queries from their future
    ratings) and open recommendations in both arms, click by a known position-biased choice
    model and post impressions, clicks and ratings; `osreco learn` runs on the learning arm
    between days. Prints NDCG@10 and CTR per day for both arms and writes a chart.

    Example: ``osreco simulate --days 7 --json``
    """
    from osreco.learning.simulate import SimulateConfig, run_simulation

    config = SimulateConfig.from_env(quick=quick, days=None if quick and days == 7 else days,
                                     users_per_day=users_per_day, seed=seed, eta=eta, explore=explore,
                                     learn=not no_learn,
                                     prefix=prefix, out_dir=out_dir)
    report = run_simulation(config, progress=None if as_json else lambda line: click.echo(line, err=True))
    report["targets"] = compute_targets(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate-report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str),
                                              encoding="utf-8")
    markdown = to_markdown(report)
    (out / "simulate-report.md").write_text(markdown, encoding="utf-8")
    write_chart(report, out / "simulate-chart.png")
    click.echo(json.dumps(report, ensure_ascii=False, default=str) if as_json else markdown)
    missed = fail_on_targets and not all(t["met"] for t in report["targets"])
    sys.exit(EXIT_FAILURES if missed else EXIT_OK)


commands: list[click.Command] = [simulate_command]
