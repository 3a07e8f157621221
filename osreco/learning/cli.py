"""`osreco learn`: one learning run (or one every DURATION) and `osreco learn history`.

    osreco learn --index movies --state ~/.osreco/learn --model-dir models/cf
    osreco learn --index movies --state ~/.osreco/learn --every 1d      # a long-running scheduler
    osreco learn history --state ~/.osreco/learn                        # table + history.png

Exit codes (``osreco.errors``): 0 ok, 1 the run failed (recorded in the history), 2 bad input,
3 OpenSearch unreachable. Errors reach the one handler of ``osreco.cli_errors``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click

from osreco.cli_errors import JSON_META, group
from osreco.learning.errors import LearnError
from osreco.learning.simulate_cli import simulate_command

__all__ = ["commands", "learn", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``6h``, ``1d`` (or a bare number of seconds) as seconds.

    Raises:
        LearnError: not a positive duration.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"] if m else 0.0
    if seconds <= 0:
        raise LearnError(f"--every {text!r} is not a positive duration", field="--every",
                         fix="write it like 90s, 30m, 6h or 1d")
    return seconds


def _summary(record: dict[str, Any]) -> str:
    d, m = record.get("data") or {}, record.get("metrics") or {}
    curve = (m.get("propensity") or {}).get("curve") or []
    lines = [f"learn run {record['run_id']}: {d.get('events', 0)} new events, {d.get('queries', 0)} new queries, "
             f"{d.get('users', 0)} users, {record.get('seconds')} s",
             "  position curve (rel. to 1): " + " ".join(f"{v:.2f}" for v in curve[:10])]
    cf = m.get("cf") or {}
    lines.append(f"  cf: {cf.get('mode')}: {cf.get('reason')}")
    for cls, r in ((m.get("fusion") or {}).get("classes") or {}).items():
        held = r.get("heldout") or {}
        nums = f" held-out IPS {held.get('current')} -> {held.get('tuned')}" if held else ""
        lines.append(f"  fusion {cls}: {r['requests']} requests, {r['clicks']} clicks;{nums}: {r['reason']}")
    fine = m.get("finetune") or {}
    lines.append(f"  fine-tuning: {fine.get('note')}")
    for name in ("encoder", "reranker"):
        if isinstance(fine.get(name), dict):
            lines.append(f"    {name}: {fine[name].get('summary')}")
    lines.append(f"  promoted: {', '.join(record.get('promoted') or []) or 'nothing'}; refused: "
                 f"{len(record.get('refused') or [])}")
    return "\n".join(lines)


@group(invoke_without_command=True)
@click.option("--index", default=None, help="Item index (alias) the sidecar serves.")
@click.option("--prefix", default=None, help="Prefix of the events/queries/users/settings indexes (default --index).")
@click.option("--state", "state_dir", default="~/.osreco/learn", show_default=True,
              help="Folder of the watermark, history.jsonl, history.png and training rows.")
@click.option("--model-dir", default=None, type=click.Path(file_okay=False),
              help="The served CF model folder (OSRECO_CF_MODEL), replaced atomically on promotion.")
@click.option("--full", is_flag=True, help="Retrain CF in full this run (default: fold-in of users with new events).")
@click.option("--full-every", type=click.IntRange(0), default=7, show_default=True,
              help="Also retrain CF in full every N-th run (0: only with --full).")
@click.option("--window-days", type=click.FloatRange(min=0.01), default=7.0, show_default=True,
              help="Traffic the position model and the fusion tuning look at.")
@click.option("--min-new-pairs", type=click.IntRange(0), default=1000, show_default=True,
              help="New click/skip pairs that make encoder/reranker fine-tuning due.")
@click.option("--finetune-pairs-per-s", type=click.FloatRange(min=0.001), default=15.0, show_default=True,
              help="Fine-tuning throughput the run's time estimate assumes (docs/benchmarks.md).")
@click.option("--finetune", is_flag=True,
              help="When due, fine-tune the encoder and the reranker on the IPW rows and promote each through "
                   "the gate (needs the export extra: torch).")
@click.option("--bundles-root", type=click.Path(file_okay=False), default=None,
              help="With --finetune: the served encoder bundles (<root>/current; osreco promote's --bundles-root); "
                   "rerankers go to <root>/reranker (point OSRECO_RERANK_BUNDLE at <root>/reranker/current).")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="With --finetune: the served encoder bundle (default <bundles-root>/current).")
@click.option("--catalog", default="movielens", show_default=True,
              help="With --finetune: the items' texts, `movielens` or a catalog JSONL (item_id, title, text).")
@click.option("--finetune-max-steps", type=click.IntRange(1), default=400, show_default=True,
              help="With --finetune: training steps per model at most.")
@click.option("--finetune-only", type=click.Choice(["both", "encoder", "reranker"]), default="both",
              show_default=True, help="With --finetune: which models to fine-tune.")
@click.option("--every", default=None, help="Run again every DURATION (90s, 30m, 6h, 1d) until stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print each run's record as one JSON line.")
@click.pass_context
def learn(ctx: click.Context, index: str | None, prefix: str | None, state_dir: str, model_dir: str | None,
          full: bool, full_every: int, window_days: float, min_new_pairs: int, finetune_pairs_per_s: float,
          finetune: bool, bundles_root: str | None, bundle: str | None, catalog: str, finetune_max_steps: int,
          finetune_only: str, every: str | None, as_json: bool) -> None:
    """Learn from the traffic since the last run: popularity and CF, the position model, IPW
    training data, fusion weights per query class; promote what beats the served, refuse the rest."""
    import os

    from osreco.learning.learn import LearnConfig, hand_weights_from_env, run_learn

    ctx.meta[JSON_META] = as_json
    if ctx.invoked_subcommand is not None:
        return
    if not index:
        raise click.UsageError("--index is required (the item index the sidecar serves)")
    interval = parse_duration(every) if every is not None else None
    tune_models = None
    if finetune:
        from pathlib import Path

        from osreco.learning.finetune import FinetuneConfig

        if not bundles_root:
            raise click.UsageError("--finetune needs --bundles-root (where promoted bundles go)")
        tune_models = FinetuneConfig(Path(bundles_root), current=Path(bundle) if bundle else None, alias=index,
                                     catalog=catalog, max_steps=finetune_max_steps,
                                     encoder=finetune_only in ("both", "encoder"),
                                     reranker=finetune_only in ("both", "reranker"))
    config = LearnConfig(index=index, prefix=prefix, state_dir=os.path.expanduser(state_dir), model_dir=model_dir,
                         full=full, full_every=full_every, window_days=window_days, min_new_pairs=min_new_pairs,
                         finetune_pairs_per_s=finetune_pairs_per_s, hand=hand_weights_from_env(),
                         finetune=tune_models)
    while True:
        started = time.monotonic()
        try:
            record = run_learn(config)
        except Exception as e:
            if interval is None:
                raise
            click.echo(f"error: learn run failed (recorded in the history; retried in {every}): "
                       f"{type(e).__name__}: {e}", err=True)
        else:
            click.echo(json.dumps(record, default=str) if as_json else _summary(record))
        if interval is None:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


@learn.command("history")
@click.option("--state", "state_dir", default="~/.osreco/learn", show_default=True, help="The learn state folder.")
@click.option("--chart", default=None, help="Where to write the chart (default <state>/history.png).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON array.")
def history_cmd(state_dir: str, chart: str | None, as_json: bool) -> None:
    """Print the learning history as a table and draw it as a PNG chart."""
    import os
    from pathlib import Path

    from osreco.learning.history import CHART_FILE, draw_history, history_table, read_history

    folder = Path(os.path.expanduser(state_dir))
    runs = read_history(folder)
    out = draw_history(runs, chart or folder / CHART_FILE)
    if as_json:
        click.echo(json.dumps({"runs": runs, "chart": str(out)}, default=str))
        return
    click.echo(history_table(runs))
    click.echo(f"chart: {out}", err=True)
    sys.stdout.flush()


commands: list[click.Command] = [learn, simulate_command]
