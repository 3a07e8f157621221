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


def test_regular_wheel_installs_the_namespace(tmp_path):
    """A non-editable build maps exporter/, ingest/, plugin/ under osreco.* in the wheel."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True, timeout=300)
    wheel = next(tmp_path.glob("osreco-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("osreco/cli.py", "osreco/node.py", "osreco/exporter/__init__.py",
                   "osreco/ingest/__init__.py", "osreco/plugin/__init__.py"):
        assert module in names
    assert not any(n.startswith(("plugin/", "exporter/", "ingest/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    out = subprocess.run([sys.executable, "-c", "import osreco.plugin, osreco.ingest, "
                          "osreco.exporter, osreco; print(osreco.plugin.__file__)"],
                         capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}).stdout
    assert out.startswith(str(target))
