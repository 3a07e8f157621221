"""The one CLI error handler (``osreco.cli_errors``): exit codes from the error tree, one line
on stderr or one JSON object with ``--json``, the same for a sub-group invoked on its own."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from osreco.cf.errors import InteractionError
from osreco.cli_errors import group
from osreco.errors import ConfigError, NodeError, OsrecoError
from osreco.exporter.errors import BundleError, ExporterError, ParityError, RuntimeEnvError
from osreco.ingest.errors import BulkError, CatalogError, IngestError, RowError
from osreco.plugin.errors import PluginError, RequestError


def _cli(error: BaseException) -> click.Group:
    @group()
    def top() -> None:
        """A toy command line."""

    @top.group()
    def sub() -> None:
        """A sub-group."""

    @sub.command()
    @click.option("--json", "as_json", is_flag=True)
    def boom(as_json: bool) -> None:
        raise error

    return top


@pytest.mark.parametrize("error, code", [
    (OsrecoError("x"), 1), (ParityError("x"), 1), (ExporterError("x"), 1),
    (ConfigError("x", field="--k"), 2), (ConfigError("x", field="OPENSEARCH_URL"), 3),
    (BundleError("x"), 2), (CatalogError("x"), 2), (RowError("x", line=3), 2), (InteractionError("x"), 2),
    (RequestError("x", field="q"), 2), (RuntimeEnvError("x"), 3), (NodeError("x"), 3),
    (IngestError("x"), 3), (BulkError("x"), 3), (PluginError("x"), 3), (OSError("disk"), 3),
])
def test_exit_code_comes_from_the_error(error, code):
    top = _cli(error)
    result = CliRunner().invoke(top, ["sub", "boom"])
    assert result.exit_code == code and result.stderr.startswith("error: ") and result.stdout == ""
    sub = top.commands["sub"]
    assert CliRunner().invoke(sub, ["boom"]).exit_code == code  # a sub-group on its own: same handler


def test_one_line_with_the_fix_and_the_node_log():
    result = CliRunner().invoke(_cli(NodeError("no node", fix="start it", log_tail="java died")), ["sub", "boom"])
    assert result.stderr.splitlines()[0] == "error: no node — fix: start it"
    assert "java died" in result.stderr


def test_json_error_object_on_stdout():
    error = BundleError("no manifest.json", "/b", fix="re-export")
    result = CliRunner().invoke(_cli(error), ["sub", "boom", "--json"])
    assert result.exit_code == 2 and result.stderr == ""
    assert json.loads(result.stdout) == {"ok": False, "error": "/b: no manifest.json — fix: re-export",
                                         "type": "BundleError", "exit_code": 2, "context": {"path": "/b"}}


def test_opensearch_errors_exit_3_naming_the_url(monkeypatch):
    from opensearchpy.exceptions import ConnectionError as OSConnectionError

    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:1")
    result = CliRunner().invoke(_cli(OSConnectionError("N/A", "refused", None)), ["sub", "boom"])
    assert result.exit_code == 3 and "http://127.0.0.1:1" in result.stderr and "OPENSEARCH_URL" in result.stderr


def test_other_exceptions_are_not_swallowed():
    result = CliRunner().invoke(_cli(KeyError("bug")), ["sub", "boom"])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)


def test_one_config_error_class_for_every_part():
    from osreco.exporter import errors as exporter_errors
    from osreco.ingest import errors as ingest_errors
    from osreco.plugin import errors as plugin_errors

    assert exporter_errors.ConfigError is ingest_errors.ConfigError is plugin_errors.ConfigError is ConfigError
    assert str(ConfigError("exists", "/out", "pass --overwrite")) == "/out: exists — fix: pass --overwrite"
    assert str(ConfigError("bad k", field="k")) == "bad k"
