"""The `--params FILE --set KEY=VALUE` options that every params-driven verb shares."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params value, e.g. --set mode=demo (repeatable)")


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved params of ``--params`` with the ``--set`` overrides."""
    from itersg.config import load_params

    return load_params(args.params, args.assignments)
