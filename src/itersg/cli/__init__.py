"""The ``itersg`` command line: one sub-command per verb.

Each module in this package registers its verbs with ``register(subparsers)``; handlers import the
heavy modules lazily so ``itersg --help`` stays fast. Nothing in the package imports ``itersg.cli``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from itersg.errors import UserError

# Modules of this package that add sub-commands, in the order `itersg --help` lists them.
COMMAND_MODULES = ("data", "fetch", "models", "train", "evaluate", "report", "bench", "pipeline", "docs")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="itersg",
        description="Iterative Scene Graph Generation: data, models, training, evaluation and report.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"itersg.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"itersg.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``itersg`` console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
    except UserError as err:
        print(f"itersg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("itersg: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
