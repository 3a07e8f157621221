"""The one-way dependency rule (docs/contracts.md), checked on every import statement.

exporter's runtime imports nothing of ours; training (exporter/train*.py) may read catalogs
through ingest so trained text matches indexed text; ingest never imports the sidecar; no part
imports the top-level orchestration (``osreco.cli``, ``osreco.demo``, ``osreco.promote``).
``osreco.node`` (the local node manager) and ``osreco.errors`` are the base everyone may use:
they import no part.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = {"osreco.cli", "osreco.demo", "osreco.promote", "osreco.promote_cli"}
TRAINING = {"train.py", "train_cli.py", "train_data.py", "train_loop.py", "rerank_train.py", "curves.py"}


def _imports(path: Path) -> set[str]:
    """Every module named by an import in ``path`` (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _forbidden(part: str, path: Path) -> set[str]:
    banned = set(TOP)
    if part == "exporter" and path.name not in TRAINING:
        banned |= {"osreco.ingest", "osreco.plugin"}
    elif part == "exporter":
        banned |= {"osreco.plugin"}
    elif part == "ingest":
        banned |= {"osreco.plugin"}
    return banned


@pytest.mark.parametrize("part", ["exporter", "ingest", "plugin"])
def test_parts_import_only_downwards(part):
    files = sorted((ROOT / part).glob("*.py"))
    assert files
    bad = []
    for path in files:
        banned = _forbidden(part, path)
        for name in _imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned):
                bad.append(f"{part}/{path.name} imports {name}")
    assert bad == []


@pytest.mark.parametrize("name", ["node.py", "errors.py"])
def test_the_base_imports_no_part(name):
    parts = ("osreco.exporter", "osreco.ingest", "osreco.plugin", *TOP)
    assert [n for n in _imports(ROOT / "osreco" / name) if n.startswith(parts)] == []


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from osreco.promote import promote\n    import osreco.plugin.app\n")
    assert _imports(f) == {"osreco.promote", "osreco.plugin.app"}
    assert "osreco.promote" in _forbidden("plugin", f)
