"""The options verbs share: `--params FILE --set KEY=VALUE` (params-driven verbs), `--force` (verbs that write)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_params_arguments(parser: argparse.ArgumentParser, *, default: Path | None = Path("params.yaml"),
                         help: str = "params file (default: params.yaml)") -> None:
    """``--params FILE`` and ``--set KEY=VALUE`` (into ``args.assignments``), the same on every verb;
    ``default`` None: the verb works without a params file."""
    parser.add_argument("--params", type=Path, default=default, help=help)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params value, e.g. --set mode=demo (repeatable)")


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    """``--force``: the same flag and help on every verb that writes (see ``itersg.files``)."""
    from itersg.files import FORCE_HELP, FORCE_OPTION

    parser.add_argument(FORCE_OPTION, action="store_true", help=FORCE_HELP)


def dataset_inputs(root: str | Path) -> list[Path]:
    """The paths of a VG150 folder that a command reading the dataset must not write over."""
    from itersg.data.vg150 import DICTS_FILE, H5_FILE, IMAGE_DATA_FILE, IMAGE_DIRS, ZERO_SHOT_FILE

    root = Path(root)
    return [root, *(root / name for name in (H5_FILE, DICTS_FILE, IMAGE_DATA_FILE, ZERO_SHOT_FILE, *IMAGE_DIRS))]


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved params of ``--params`` with the ``--set`` overrides."""
    from itersg.config import load_params

    return load_params(args.params, args.assignments)
