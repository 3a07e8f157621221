"""The package installs under one namespace, its CLI lists its subcommands, and the
sidecar and ingest runtime never import torch."""

from __future__ import annotations

import json
import subprocess
import sys


def _py(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120).stdout


def test_namespace_imports():
    out = _py("import osreco, osreco.exporter, osreco.ingest, osreco.plugin; print(osreco.__version__)")
    assert out.strip() == "0.1.0"


def test_cli_help_lists_subcommands():
    out = subprocess.run(["osreco", "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("opensearch", "export", "ingest", "cf", "serve", "eval"):
        assert f"  {sub}" in out, f"`osreco --help` does not list {sub}"


def test_runtime_does_not_import_torch():
    code = ("import sys, json, osreco.cli, osreco.ingest, osreco.plugin;"
            "import osreco.plugin.app, osreco.ingest.writer, osreco.exporter.encoder;"
            "print(json.dumps([m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]))")
    assert json.loads(_py(code)) == []
