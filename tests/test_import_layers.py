"""Every package and top-level module of itersg imports only what its docstring's "May import:" line
allows, read from the import graph itself (function-level imports included), and no two units import
each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from itersg.workflow.code_deps import ImportGraph

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "itersg"


def _unit(module: str) -> str:
    """The unit of a module: its top-level package, or the top-level module itself (``itersg`` itself: "")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    """``{unit: units it imports}`` over every module of the package (the workflow's import graph)."""
    modules = ImportGraph(PACKAGE)
    graph: dict[str, set[str]] = {}
    for module in modules.files:
        unit = _unit(module)
        graph.setdefault(unit, set()).update({_unit(m) for m in modules.imports(module)} - {unit, ""})
    graph.pop("", None)
    return graph


def allowed(unit: str) -> set[str] | None:
    """The units the ``May import:`` line of ``unit``'s docstring names; None for "anything"."""
    path = PACKAGE / unit / "__init__.py" if (PACKAGE / unit).is_dir() else PACKAGE / f"{unit}.py"
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = re.search(r"May import: (.*?)(?:\n\n|$)", docstring, re.S)
    assert match, f"{path}: its docstring has no 'May import:' line"
    text = match[1]
    if text.startswith("anything"):
        return None
    return set(re.findall(r"itersg\.(\w+)", text))


GRAPH = import_graph()


@pytest.mark.parametrize("unit", sorted(u for u in GRAPH if u != "__main__"))
def test_each_unit_imports_only_what_its_docstring_allows(unit):
    permitted = allowed(unit)
    if permitted is not None:
        assert GRAPH[unit] <= permitted, f"itersg.{unit} imports {sorted(GRAPH[unit] - permitted)} beyond its line"


def test_no_two_units_import_each_other():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in GRAPH.get(start, ()))

    cycles = sorted(u for u in GRAPH if reaches(u, u, {u}))
    assert cycles == []


def test_the_graph_sees_function_level_imports():
    """Lazy imports count: the command line imports the training engine only inside its handlers."""
    source = (PACKAGE / "cli" / "train.py").read_text()
    assert "\n    from itersg.engine" in source and "\nfrom itersg.engine" not in source
    assert "engine" in GRAPH["cli"]
