"""The ``itersg`` command line: one sub-command per verb.

Each module in this package registers its verbs with ``register(subparsers)``; handlers import the
heavy modules lazily so ``itersg --help`` stays fast. Nothing in the package imports ``itersg.cli``.

May import: anything of itersg.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from itersg.errors import UserError
from itersg.files import SPACE_ERRNOS, write_failure

PACKAGE_DIR = Path(__file__).resolve().parents[1]
_python_format_warning = warnings.formatwarning

# Modules of this package that add sub-commands, in the order `itersg --help` lists them.
COMMAND_MODULES = ("data", "fetch", "models", "train", "evaluate", "predict", "report", "bench", "pipeline",
                   "docs")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one ``itersg: error:`` line, as every other error
    (argparse prints the whole usage first); the sub-command parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"itersg: error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered."""
    parser = OneLineErrorParser(
        prog="itersg",
        description="Iterative Scene Graph Generation: data, models, training, evaluation and report.",
        epilog="Outputs: no command writes over one of its own inputs (nor over the same file through a link), "
               "over an existing file that it did not write itself, or into a non-empty folder that is not one of "
               "its own output folders; each refusal is one error line naming the path. --force, on every "
               "command that writes, allows the last two: a rerun onto the command's own earlier output needs "
               "no flag.",
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


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """itersg's own warnings as one ``itersg: warning: ...`` line; others in Python's usual form."""
    if Path(filename).resolve().is_relative_to(PACKAGE_DIR) and issubclass(category, UserWarning):
        return f"itersg: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _os_error_line(err: OSError) -> str | None:
    """One line for a full disk, a read-only file system or a refused permission; None for other errors."""
    if err.errno in SPACE_ERRNOS or err.errno == errno.EROFS:  # only writes fail this way
        return str(write_failure(err.filename or Path(), err))
    if err.errno in (errno.EACCES, errno.EPERM):  # reading or writing
        return f"{err.filename or 'a file'}: {err.strerror}; check its permissions (and its folder's)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``itersg`` console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        status = args.handler(args)
    except UserError as err:
        print(f"itersg: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # not turned into a UserError where it happened: still one line, naming the file
        message = _os_error_line(err)
        if message is None:
            raise
        print(f"itersg: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("itersg: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = _python_format_warning
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
