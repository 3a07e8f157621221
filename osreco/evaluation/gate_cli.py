"""`osreco promote`: the quality gate between a trained model and the serving one (``osreco.evaluation.gate``).

Errors reach the one handler of ``osreco.cli_errors``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from osreco.cli_errors import command
from osreco.errors import EXIT_FAILURES, EXIT_OK
from osreco.exporter.errors import RuntimeEnvError


@command("promote")
@click.option("--candidate", required=True, type=click.Path(exists=True, file_okay=False),
              help="The fine-tuned model folder (from `osreco train encoder`) or a bundle.")
@click.option("--current", required=True, type=click.Path(exists=True, file_okay=False),
              help="The serving bundle.")
@click.option("--bundles-root", required=True, type=click.Path(file_okay=False),
              help="Where promoted bundles go (<root>/<artifact>) and <root>/current points.")
@click.option("--alias", default=None, help="Item index alias to rebuild with the new vectors (alias swap).")
@click.option("--catalog", default="movielens", show_default=True,
              help="Catalog re-embedded on re-index: `movielens` or a JSONL (item_id, title, text).")
@click.option("--quantize", type=click.Choice(["int8", "none"]), default="none", show_default=True,
              help="Precision of the candidate's export.")
@click.option("--evaluator", type=click.Choice(["eval", "offline"]), default="eval", show_default=True,
              help="`eval`: osreco eval's search task through the sidecar and OpenSearch; `offline`: "
                   "the same queries and relevance, kNN only, in memory.")
@click.option("--variant", default="osreco", show_default=True, help="With --evaluator eval: the gating variant.")
@click.option("--full", is_flag=True, help="With --evaluator eval: the full query set, not --quick.")
@click.option("--max-queries", type=int, default=48, show_default=True, help="With --evaluator offline.")
@click.option("--users-per-query", type=int, default=4, show_default=True, help="With --evaluator offline.")
@click.option("--min-delta", type=float, default=0.0, show_default=True,
              help="How much higher the candidate's NDCG@10 must be.")
@click.option("--url", default=None, help="OpenSearch URL (default: OPENSEARCH_URL or the local node).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def promote_cmd(candidate: str, current: str, bundles_root: str, alias: str | None, catalog: str, quantize: str,
                evaluator: str, variant: str, full: bool, max_queries: int, users_per_query: int,
                min_delta: float, url: str | None, as_json: bool) -> None:
    """Promote a candidate model only if its NDCG@10 is at least the serving model's.

    Exit 0 promoted, 1 refused (both sets of numbers printed), 2 bad input, 3 environment.

    Example: osreco promote --candidate models/ft --current bundles/current --bundles-root bundles
    --alias movies
    """
    from osreco.evaluation.gate import PromoteConfig, harness_evaluator, offline_evaluator, promote

    if url:
        os.environ["OPENSEARCH_URL"] = url
    config = PromoteConfig(Path(candidate), Path(current), Path(bundles_root),
                           None if quantize == "none" else quantize, alias, catalog, min_delta=min_delta)
    evaluate = (offline_evaluator(max_queries, users_per_query) if evaluator == "offline"
                else harness_evaluator(variant, quick=not full))
    result = promote(config, evaluate, _client() if alias else None,
                     report=(lambda line: None) if as_json else click.echo)
    if as_json:
        outcome = dict(promoted=result.promoted, summary=result.decision.summary(),
                       candidate=result.decision.candidate, current=result.decision.current,
                       bundle=str(result.bundle) if result.bundle else None, artifact_id=result.artifact_id,
                       index=result.index)
        click.echo(json.dumps(outcome, default=str))
    sys.exit(EXIT_OK if result.promoted else EXIT_FAILURES)


def _client():
    """An opensearch-py client from OPENSEARCH_URL or the local node (exit 3 when none)."""
    from osreco.ingest.connection import OpenSearchConfig, connect

    try:
        return connect(OpenSearchConfig.from_env())
    except Exception as e:  # any connection setup failure is an environment problem
        raise RuntimeEnvError(f"no OpenSearch node: {e}", fix="pass --url or start `osreco opensearch start`") from e


commands: list[click.Command] = [promote_cmd]
