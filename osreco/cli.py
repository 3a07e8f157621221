"""The ``osreco`` command line: one group, subcommands contributed by each package.

Exit codes: 0 success, 1 a job finished but reported failures (for example dead-lettered
rows), 2 bad usage or bad input, 3 an environment problem (node, Java, Maven, model files).
"""

from __future__ import annotations

import json
import os
import sys

import click

from osreco import __version__
from osreco.errors import NodeError, OsrecoError
from osreco.node import OPTIONAL_PLUGINS, LocalNode, NodeConfig

EXIT_FAILURES, EXIT_USAGE, EXIT_ENV = 1, 2, 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def start(heap: str | None, port: int | None, plugins: str | None, version: str | None,
          as_json: bool) -> None:
    """Start the node (downloading it once) and wait for green health with k-NN."""
    node = _node(heap, port, plugins, version)
    try:
        url = node.start()
    except NodeError as e:
        _fail_node(e)
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
        click.echo("no local node is running: run `osreco opensearch start`", err=True)
        sys.exit(EXIT_ENV)
    click.echo(u)


@cli.command()
def demo() -> None:
    """Run the main job end to end: local node, packaged model, MovieLens, CF, sidecar, queries."""
    from osreco.demo import run_demo

    try:
        run_demo()
    except NodeError as e:
        _fail_node(e)
    except OsrecoError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_ENV)


def _fail_node(e: NodeError) -> None:
    click.echo(f"error: {e}", err=True)
    if e.log_tail:
        click.echo("--- tail of the node's log ---\n" + e.log_tail, err=True)
    sys.exit(EXIT_ENV)


def _register_package_commands() -> None:
    """Each package contributes click commands through its own ``cli`` module; ``osreco promote``,
    which spans the parts, comes from this package's ``promote_cli``."""
    from osreco.evaluation import gate_cli as promote_cli
    from osreco.exporter import cli as exporter_cli
    from osreco.training import cli as train_cli
    from osreco.cf import cli as cf_cli
    from osreco.ingest import cli as ingest_cli
    from osreco.plugin import cli as plugin_cli
    from osreco.evaluation import cli as eval_cli

    from osreco.evaluation import cf as eval_cf

    for module in (exporter_cli, train_cli, ingest_cli, cf_cli, plugin_cli, eval_cli, promote_cli):
        for command in module.commands:
            cli.add_command(command)
    cf_cli.cf.add_command(eval_cf.eval_)  # `osreco cf eval`: CF's offline evaluation lives with evaluation


_register_package_commands()


def main() -> None:
    """Console-script entry: map osreco errors to one clear line and an exit code."""
    try:
        cli(standalone_mode=True)
    except OsrecoError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
