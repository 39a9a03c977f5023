"""`itersg docs`: regenerate (or check) docs/configuration.md and docs/cli.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("docs", help="regenerate docs/configuration.md and docs/cli.md")
    parser.add_argument("--root", type=Path, default=Path(), help="project root (default: .)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated doc is stale")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from itersg.docs_gen import stale_docs, write_docs

    if args.check:
        stale = stale_docs(args.root)
        for path in stale:
            print(f"{path} is stale: run `itersg docs`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_docs(args.root):
        print(f"wrote {path}")
    return 0
