"""The case tables of ``test_bad_inputs.py``: ``Case`` and every group's cases in one mapping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cli_inputs import Inputs


@dataclass(frozen=True)
class Case:
    """One command line on a copy of the demo's files.

    ``argv(files)``: the arguments after ``itersg``; ``setup(files)``: spoils a file first; ``says``:
    the text(s) the one error line must hold (a callable gets ``files``), empty when the command must
    succeed; ``changes``: files (relative to ``files.root``) a successful run may change;
    ``check(files)``: asserts about a successful run's result.
    """

    argv: Callable[[Inputs], list[str]]
    says: str | tuple[str, ...] | Callable[[Inputs], str | tuple[str, ...]]
    setup: Callable[[Inputs], None] | None = None
    changes: tuple[str, ...] = ()
    check: Callable[[Inputs], None] | None = None


def _collect() -> dict[str, Case]:
    import importlib

    cases: dict[str, Case] = {}
    for group in GROUPS:
        module = importlib.import_module(f"bad_inputs_{group}")
        for name, case in module.CASES.items():
            assert f"{group}/{name}" not in cases
            cases[f"{group}/{name}"] = case
    return cases


GROUPS = ("outputs", "datasets", "settings", "checkpoints", "images", "report", "bench")
CASES = _collect()
