"""The ``osreco`` command line: one group, subcommands contributed by each package.

Exit codes (``osreco.errors``): 0 success, 1 a job finished but reported failures (for example
dead-lettered rows), 2 bad usage or bad input, 3 an environment problem (node, Java, Maven,
model files, a missing dependency). Every command's errors reach the one handler of
``osreco.cli_errors``, which prints ``error: ...`` (or a JSON object with ``--json``) and exits
with the error's code.
"""

from __future__ import annotations

import json
import os

import click

from osreco import __version__
from osreco.cli_errors import group
from osreco.errors import EXIT_ENV, NodeError, OsrecoError
from osreco.node import OPTIONAL_PLUGINS, LocalNode, NodeConfig


@group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="osreco")
def cli() -> None:
    """osreco — personalized, language-aware search and recommendation for OpenSearch."""
    _default_to_local_node()


def _default_to_local_node() -> None:
    """The command line's one convenience: with no ``OPENSEARCH_URL``, use the running local node.

    Only this edge does it; the runtime (sidecar under gunicorn, library calls) needs the URL.
    """
    if not os.environ.get("OPENSEARCH_URL"):
        url = LocalNode(NodeConfig.from_env()).url()
        if url:
            os.environ["OPENSEARCH_URL"] = url


@cli.group()
def opensearch() -> None:
    """Fetch, start, stop and inspect the local OpenSearch node (the embedded default)."""


def _node(heap: str | None = None, port: int | None = None, plugins: str | None = None,
          version: str | None = None) -> LocalNode:
    overrides: dict[str, object] = {"heap": heap, "port": port, "version": version}
    if plugins is not None:
        overrides["plugins"] = tuple(p for p in plugins.split(",") if p and p != "knn")
    return LocalNode(NodeConfig.from_env(**overrides))


@opensearch.command()
@click.option("--heap", default=None, help="JVM heap, e.g. 2g (default 2g).")
@click.option("--port", type=int, default=None, help="HTTP port; 0 picks a free one (default).")
@click.option("--plugins", default=None,
              help=f"Comma list of optional plugins beyond k-NN: {','.join(OPTIONAL_PLUGINS)} "
                   "(default: all); '' for k-NN only.")
@click.option("--version", "version", default=None, help="OpenSearch version (default: newest that loads).")
@click.option("--fresh", is_flag=True,
              help="Start on an empty data folder (a running node is stopped first); downloads stay cached. "
                   "Also OSRECO_NODE_FRESH=1.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def start(heap: str | None, port: int | None, plugins: str | None, version: str | None, fresh: bool,
          as_json: bool) -> None:
    """Start the node (downloading it once) and wait for green health with k-NN."""
    node = _node(heap, port, plugins, version)
    if fresh:
        node = node.with_config(fresh=True)
    url = node.start()
    st = node.status()
    click.echo(json.dumps(st) if as_json else f"OpenSearch {st.get('version')} ready at {url} "
               f"(plugins: {', '.join(st.get('loaded_plugins', []))})")


@opensearch.command()
def stop() -> None:
    """Stop the node; says so and exits 0 when none is running."""
    click.echo("stopped" if _node().stop() else "not running")


@opensearch.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def status(as_json: bool) -> None:
    """Report whether the node runs, its url, health, plugins and cache size."""
    st = _node().status()
    if as_json:
        click.echo(json.dumps(st))
    elif st["running"]:
        click.echo(f"running: OpenSearch {st['version']} at {st['url']} health={st.get('health')} "
                   f"plugins={','.join(st.get('loaded_plugins', []))} cache={st['cache_bytes'] / 2**20:.0f} MiB")
    else:
        click.echo(f"not running (cache {st['cache_dir']}, {st['cache_bytes'] / 2**20:.0f} MiB)")


@opensearch.command()
def url() -> None:
    """Print the running node's URL (for OPENSEARCH_URL); exit 3 when none runs."""
    u = _node().url()
    if not u:
        raise NodeError("no local node is running", fix="run `osreco opensearch start`")
    click.echo(u)


@cli.command()
def demo() -> None:
    """Run the main job end to end: local node, packaged model, MovieLens, CF, sidecar, queries."""
    from osreco.demo import run_demo

    try:
        run_demo()
    except OsrecoError as e:
        if type(e) is OsrecoError:  # the demo's own failures (a step, the sidecar) are its environment's
            e.exit_code = EXIT_ENV
        raise


def _register_package_commands() -> None:
    """Each package contributes click commands through its own ``cli`` module; ``osreco promote``,
    which spans the parts, comes from ``osreco.evaluation.gate_cli``."""
    from osreco.cf import cli as cf_cli
    from osreco.evaluation import cf as eval_cf
    from osreco.evaluation import cli as eval_cli
    from osreco.evaluation import gate_cli as promote_cli
    from osreco.exporter import cli as exporter_cli
    from osreco.ingest import cli as ingest_cli
    from osreco.learning import cli as learn_cli
    from osreco.plugin import cli as plugin_cli
    from osreco.training import cli as train_cli

    for module in (exporter_cli, train_cli, ingest_cli, cf_cli, plugin_cli, eval_cli, promote_cli, learn_cli):
        for command in module.commands:
            cli.add_command(command)
    cf_cli.cf.add_command(eval_cf.eval_)  # `osreco cf eval`: CF's offline evaluation lives with evaluation


_register_package_commands()


def main() -> None:
    """Console-script entry (errors are handled by the group, see ``osreco.cli_errors``)."""
    cli()


if __name__ == "__main__":
    main()
