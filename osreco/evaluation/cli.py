"""Click command for `osreco eval`: quality of every signal, side by side, on MovieLens-100k."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from osreco.cli_errors import command
from osreco.errors import EXIT_FAILURES, EXIT_OK

TASKS = ("rec", "similar", "listings", "search", "intent")


@command("eval")
@click.option("--quick", is_flag=True, help="A small subset (few users and queries) for CI.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of markdown.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="osreco-eval", show_default=True,
              help="Folder for eval-report.json, eval-report.md, eval-chart.png and the CF model (cf-model/).")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False), default=None,
              help="Model bundle to evaluate (default: all-MiniLM-L6-v2 fp32, exported once into the cache).")
@click.option("--index", "alias", default="osreco-eval-ml100k", show_default=True,
              help="Item index alias (ingested once, reused while its _meta artifact_id matches).")
@click.option("--tasks", default=",".join(TASKS), show_default=True,
              help="Comma list of tasks: rec (served recommend vs offline CF), similar (next-item), listings "
                   "(anonymous filtered listings), search (personalized), intent (golden parsing); "
                   "image (search by photo and text-to-image on the synthetic shop), voice (spoken queries "
                   "and a spoken catalog); image and voice run only when named.")
@click.option("--golden", "golden_path", type=click.Path(dir_okay=False), default=None,
              help="Golden intent queries (default: tests/golden/intents.jsonl).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the user samples.")
@click.option("--rerank-bundle", type=click.Path(exists=True, file_okay=False), default=None,
              help="Cross-encoder bundle (`osreco train reranker --export`): adds the osreco+rerank "
                   "search variant.")
@click.option("--rerank-top-n", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Fused candidates the cross-encoder re-orders.")
@click.option("--zh-encoder/--no-zh-encoder", default=True, show_default=True,
              help="Also embed items with the Chinese encoder (bge-small-zh-v1.5, fetched once with mvn) and "
              "embed Chinese queries with it.")
@click.option("--fail-on-targets", is_flag=True, help="Exit 1 when a quality target is missed.")
def eval_command(quick: bool, as_json: bool, out_dir: str, bundle_dir: str | None, alias: str, tasks: str,
                 golden_path: str | None, seed: int, rerank_bundle: str | None, rerank_top_n: int,
                 zh_encoder: bool, fail_on_targets: bool) -> None:
    """Measure recommendation, similar items, listings, personalized search and intent parsing on MovieLens-100k.

    Runs the real sidecar (its Flask app, in process) against the real OpenSearch node in
    several configurations, prints a markdown table (or JSON with --json), and writes the
    report and a PNG chart into --out. Exit 0 when the run completed, 1 when sidecar requests
    failed (or, with --fail-on-targets, a target was missed), 2 on bad options, 3 when the
    node or model files are unusable.

    Example: ``osreco eval --quick --json``
    """
    from osreco.evaluation.report import to_markdown, write_chart
    from osreco.evaluation.run import EvalConfig, run_eval

    config = EvalConfig.from_env(quick=quick, alias=alias, bundle_dir=bundle_dir,
                                 tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
                                 golden_path=golden_path, seed=seed, rerank_bundle=rerank_bundle,
                                 rerank_top_n=rerank_top_n, cf_model_dir=Path(out_dir) / "cf-model",
                                 zh_encoder=zh_encoder)
    # The BM25-only variant degrades on purpose on every request: keep its warnings out of the output.
    logging.getLogger("osreco.plugin.service").setLevel(logging.ERROR)
    report = run_eval(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval-report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    markdown = to_markdown(report)
    (out / "eval-report.md").write_text(markdown, encoding="utf-8")
    if report.get("recommendation") or report.get("search"):
        write_chart(report, out / "eval-chart.png")
    click.echo(json.dumps(report, ensure_ascii=False) if as_json else markdown)
    failed = any(report.get(s, {}).get("errors") for s in ("recommendation", "similar", "listings", "search"))
    missed = fail_on_targets and not all(t["met"] for t in report.get("targets", []))
    sys.exit(EXIT_FAILURES if failed or missed else EXIT_OK)


commands: list[click.Command] = [eval_command]
