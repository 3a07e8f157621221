"""The one-way arrows of docs/architecture.md, checked on every import statement, with no exemptions.

Each part may import only the parts listed for it (and itself). Function-level imports count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BASE = {"osreco.errors", "osreco.cli_errors"}  # the error tree and the one CLI error handler
RUNTIME = BASE | {"osreco.exporter"}
INGEST = RUNTIME | {"osreco.ingest"}
CF = INGEST | {"osreco.cf"}
# Each part: (its folder, the modules it is made of, what it may import).
PARTS: dict[str, tuple[Path, set[str]]] = {
    "osreco.errors": (ROOT / "osreco" / "errors.py", set()),
    "osreco.cli_errors": (ROOT / "osreco" / "cli_errors.py", {"osreco.errors"}),
    "osreco.exporter": (ROOT / "exporter", BASE),
    "osreco.ingest": (ROOT / "ingest", RUNTIME),
    "osreco.cf": (ROOT / "osreco" / "cf", INGEST),
    "osreco.training": (ROOT / "osreco" / "training", CF),
    "osreco.plugin": (ROOT / "plugin", CF),
    "osreco.node": (ROOT / "osreco" / "node.py", BASE | {"osreco.node_install"}),
    "osreco.node_install": (ROOT / "osreco" / "node_install.py", BASE),  # used only by osreco.node
    "osreco.evaluation": (ROOT / "osreco" / "evaluation",
                          CF | {"osreco.training", "osreco.plugin", "osreco.node"}),
    "osreco.learning": (ROOT / "osreco" / "learning",
                        CF | {"osreco.training", "osreco.plugin", "osreco.node", "osreco.evaluation"}),
}
OURS = tuple(PARTS) + ("osreco.cli", "osreco.demo", "osreco.evaluation")


def _imports(path: Path) -> set[str]:
    """Every module named by an import in ``path`` (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # ``from osreco import cf`` names the part osreco.cf
            if node.module == "osreco":
                names.update(f"osreco.{a.name}" for a in node.names)
    return names


def _part_of(name: str) -> str | None:
    """The part a module name belongs to (longest match), or None when it is not ours."""
    best = None
    for part in (*PARTS, "osreco.cli", "osreco.demo"):
        if (name == part or name.startswith(part + ".")) and (best is None or len(part) > len(best)):
            best = part
    return best


def _violations(part: str) -> list[str]:
    where, allowed = PARTS[part]
    files = sorted(where.rglob("*.py")) if where.is_dir() else [where]
    assert files, f"{part} has no modules at {where}"
    bad = []
    for path in files:
        for name in _imports(path):
            target = _part_of(name)
            if target is not None and target != part and target not in allowed:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


@pytest.mark.parametrize("part", list(PARTS))
def test_parts_import_only_downwards(part):
    assert _violations(part) == []


def test_every_module_belongs_to_a_part():
    """A new folder or module must be placed in the picture before it can import anything."""
    homeless = []
    for folder in ("osreco", "exporter", "ingest", "plugin"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if folder == "osreco":
                name = "osreco." + rel[len("osreco/"):-3].replace("/", ".")
            else:
                name = f"osreco.{folder}." + rel[len(folder) + 1:-3].replace("/", ".")
            name = name.removesuffix(".__init__")
            if name not in ("osreco", "osreco.cli", "osreco.demo") and _part_of(name) is None:
                homeless.append(rel)
    assert homeless == []


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from osreco.evaluation.gate import promote\n    import osreco.plugin.app\n"
                 "    from osreco import cf\n")
    assert _imports(f) == {"osreco.evaluation.gate", "osreco.plugin.app", "osreco", "osreco.cf"}
    assert _part_of("osreco.evaluation.gate") == "osreco.evaluation"
    assert "osreco.evaluation" not in PARTS["osreco.plugin"][1]


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "ingest"
    fake.mkdir()
    (fake / "bad.py").write_text("from osreco.plugin.app import create_app\n")
    monkeypatch.setitem(PARTS, "osreco.ingest", (fake, RUNTIME))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations("osreco.ingest") == ["ingest/bad.py imports osreco.plugin.app"]
