"""The code dependencies of a workflow command, read from the import graph, on a small package made here."""

from pathlib import Path

import pytest

from itersg.workflow.code_deps import ImportGraph

PACKAGE = {
    "__init__.py": '"""Top."""\n',
    "errors.py": "class UserError(Exception):\n    pass\n",
    "config.py": 'from itersg.errors import UserError\nSCHEMA = "schemas/params.schema.yaml"\n',
    "schemas/params.schema.yaml": "type: object\n",
    "notes.txt": "named only in a docstring\n",
    "cli/__init__.py": "import importlib\n\nfrom itersg.errors import UserError\n",
    "cli/train.py": (
        '"""Training; see notes.txt."""\nfrom itersg.config import SCHEMA\n\n\n'
        "def register(subparsers):\n"
        '    subparsers.add_parser("train")\n    p = subparsers.add_parser("launch")\n'
        '    verbs = p.add_subparsers()\n    verbs.add_parser("inner")\n\n\n'
        "def _run(args):\n    from itersg.engine import loop\n"),
    "cli/report.py": (
        "from itersg.report.render import render\n\n\n"
        'def register(subparsers):\n    subparsers.add_parser("report")\n'),
    "engine/__init__.py": "",
    "engine/loop.py": "from . import step\nfrom ..models import net\n",
    "engine/step.py": "",
    "models/__init__.py": "",
    "models/net.py": "import torch\nfrom itersg.models.layers import mlp  # a module, not an attribute\n",
    "models/layers/__init__.py": "",
    "models/layers/mlp.py": "",
    "models/layers/unused.py": "",
    "report/__init__.py": "",
    "report/render.py": 'TEMPLATE = "report.html.j2"\n',
    "report/templates/report.html.j2": "<html></html>\n",
}


@pytest.fixture
def graph(tmp_path) -> ImportGraph:
    for name, text in PACKAGE.items():
        path = tmp_path / "src" / "itersg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ImportGraph.of_project(tmp_path)


def _names(graph: ImportGraph, files: list[Path]) -> list[str]:
    return [path.relative_to(graph.package_dir).as_posix() for path in files]


def test_a_command_runs_its_module_what_it_imports_at_any_level_and_the_packages_above(graph):
    assert _names(graph, graph.command_files("{params.launch} itersg train --out x > log 2>&1")) == [
        "__init__.py", "cli/__init__.py", "cli/train.py", "config.py",
        "engine/__init__.py", "engine/loop.py", "engine/step.py", "errors.py",
        "models/__init__.py", "models/layers/__init__.py", "models/layers/mlp.py", "models/net.py",
        "schemas/params.schema.yaml"]


def test_another_command_module_and_a_docstrings_file_name_do_not_count(graph):
    files = _names(graph, graph.command_files("itersg train"))
    assert "cli/report.py" not in files and "notes.txt" not in files
    assert _names(graph, graph.command_files("itersg report --out r.html")) == [
        "__init__.py", "cli/__init__.py", "cli/report.py", "errors.py", "report/__init__.py",
        "report/render.py", "report/templates/report.html.j2"]


def test_verbs_are_the_top_level_ones_and_an_unknown_verb_is_an_error(graph):
    assert graph.verb_modules == {"train": "itersg.cli.train", "launch": "itersg.cli.train",
                                  "report": "itersg.cli.report"}
    assert graph.command_files("snakemake --version") == [] and graph.fingerprint("echo") == ""
    with pytest.raises(ValueError, match=r"\['inner'\]"):
        graph.command_files("itersg inner")


def test_the_fingerprint_follows_the_contents_of_exactly_those_files(graph):
    before = graph.fingerprint("itersg train")
    report = graph.fingerprint("itersg report")
    (graph.package_dir / "models/layers/mlp.py").write_text("X = 1\n")
    assert graph.fingerprint("itersg train") != before and graph.fingerprint("itersg report") == report
    (graph.package_dir / "models/layers/mlp.py").write_text("")
    (graph.package_dir / "models/layers/unused.py").write_text("Y = 2\n")
    assert graph.fingerprint("itersg train") == before
