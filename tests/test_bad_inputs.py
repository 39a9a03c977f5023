"""Every bad input a careless user gives: one ``itersg: error:`` line and exit 2, or a correct result.

Each case runs the command line in-process on a fresh copy of a demo's files (``cli_inputs``), after
its ``setup`` has spoilt one of them, and checks:

* an error case: exit status 2, stderr exactly one line ``itersg: error: ...`` holding every text of
  ``says``, no traceback, and no file of the copy created, changed or deleted;
* a success case (``says`` empty): exit status 0, and no file changed except those in ``changes``.

The tables are grouped by what goes wrong; each group lives in its own ``bad_inputs_*.py`` module.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bad_inputs_cases import CASES
from cli_inputs import Inputs, build_inputs


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory) -> Inputs:
    return build_inputs(tmp_path_factory.mktemp("demo"))


def fresh_copy(demo: Inputs, folder: Path) -> Inputs:
    """The demo's files copied to ``folder``, with every path of ``demo`` moved along."""
    shutil.copytree(demo.root, folder)
    moved = {name: folder / value.relative_to(demo.root) for name, value in vars(demo).items()
             if isinstance(value, Path) and value != demo.root}
    return replace(demo, root=folder, **moved)


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (folders as ``/``)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        state[name] = "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def run(argv: list[str], capsys) -> tuple[int, str]:
    from itersg.cli import main

    try:
        status = main(argv)
    except SystemExit as stop:  # argparse
        status = stop.code if isinstance(stop.code, int) else 1
    return status, capsys.readouterr().err


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, demo_files, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    files = fresh_copy(demo_files, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    if case.setup is not None:
        case.setup(files)
    before = snapshot(files.root)
    status, err = run(case.argv(files), capsys)
    after = snapshot(files.root)
    says = case.says(files) if callable(case.says) else case.says
    if not says:
        assert status == 0, err[-3000:]
        changed = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
        assert {n for n in changed if n in before} <= set(case.changes), sorted(changed)
        if case.check is not None:
            case.check(files)
        return
    lines = err.splitlines()
    assert status == 2, f"exit status {status}:\n{err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("itersg: error: "), err[-3000:]
    for text in (says,) if isinstance(says, str) else says:
        assert text in lines[0], lines[0]
    assert after == before, "files created, changed or deleted"
