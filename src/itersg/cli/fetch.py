"""`itersg fetch`: download and verify the inputs of the manifest (VG150 images and files, weights)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from itersg.errors import UserError

if TYPE_CHECKING:
    from itersg.data.fetch import Manifest

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY_UNITS = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def _bytes(text: str) -> int:
    """Parse a byte count: ``1000``, ``500M``, ``2G``, ``1.5GiB`` (K/M/G/T decimal, Ki/Mi/Gi/Ti binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (examples: 1000, 500M, 2G, 1GiB)")
    unit = match.group(2) or ""
    return int(float(match.group(1)) * {**_UNITS, **_BINARY_UNITS}[unit])


def register(subparsers: argparse._SubParsersAction) -> None:
    from itersg.cli._params import add_force_argument

    parser = subparsers.add_parser(
        "fetch",
        help="download and verify VG150 and pretrained weights",
        description=(
            "Download the named inputs of the manifest (or groups of them, e.g. `vg`, `weights`) into DEST, "
            "resuming partial downloads, verifying size and sha256 (recording it in DEST/fetch.lock.json "
            "on first use where none is pinned) and unpacking archives safely. Inputs behind cloud-drive "
            "pages must be downloaded by hand: fetch says where to put them and verifies them."
        ),
    )
    add = parser.add_argument
    add("names", nargs="*", metavar="NAME", help="inputs or groups to fetch (see --list)")
    add("--all", action="store_true", help="fetch every input of the manifest")
    add("--list", action="store_true", help="list the inputs and groups, then exit")
    add("--dest", type=Path, default=Path("resources"), help="destination folder (default: resources)")
    add("--manifest", type=Path, default=None, help="manifest YAML (default: the packaged one)")
    add("--skip-manual", action="store_true", help="do not fail when a manual input is missing")
    add("--keep-archives", action="store_true", help="keep zip archives (DEST/archives) after unpacking")
    add("--attempts", type=int, default=5, help="tries per URL on network errors and HTTP 5xx (default: 5)")
    add("--retry-delay", type=float, default=2.0, metavar="SECONDS",
        help="wait before the first retry, doubled after each (default: 2)")
    add("--timeout", type=float, default=60.0, metavar="SECONDS", help="network timeout (default: 60)")
    add("--reserve", type=_bytes, default=256 * 2**20, metavar="BYTES",
        help="disk space that must stay free besides the downloads, e.g. 500M or 2G (default: 256MiB)")
    add_force_argument(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from itersg.data.fetch import FetchOptions, fetch, load_manifest

    manifest = load_manifest(args.manifest)
    if args.list:
        _print_list(manifest, args.dest)
        return 0
    if args.all == bool(args.names):
        raise UserError("name the inputs to fetch or pass --all (not both); `itersg fetch --list` shows them")
    if args.attempts < 1 or args.retry_delay < 0 or args.timeout <= 0:
        raise UserError("--attempts must be at least 1, --retry-delay at least 0 and --timeout positive")
    options = FetchOptions(
        attempts=args.attempts,
        retry_delay=args.retry_delay,
        timeout=args.timeout,
        reserve=args.reserve,
        keep_archives=args.keep_archives,
        skip_manual=args.skip_manual,
        force=args.force,
    )
    names = list(manifest.entries) if args.all else args.names
    _check_destination(args.dest)
    fetch(names, args.dest, manifest=manifest, options=options)
    return 0


def _check_destination(dest: Path) -> None:
    """--dest must be a folder this process can create and write into."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: is a file; --dest must be a folder (default: resources)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{dest}: cannot create the folder ({err.strerror}); choose another --dest") from None
    if not os.access(dest, os.W_OK):
        raise UserError(f"{dest}: the folder is not writable; choose another --dest or fix its permissions")


def _print_list(manifest: Manifest, dest: Path) -> None:
    from itersg.data.fetch import LOCK_NAME, human_size, locked_entries

    locked = locked_entries(dest)
    rows = [("NAME", "GROUP", "KIND", "SIZE", "SHA256", "HOW", "DEST")]
    for e in manifest.entries.values():
        sha = "pinned" if e.sha256 else ("locked" if e.name in locked else "first use")
        how = "by hand" if e.manual else "download"
        rows.append((e.name, e.group or "-", e.kind, human_size(e.size), sha, how, e.dest))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    groups = ", ".join(f"{group} ({len(names)})" for group, names in manifest.groups.items())
    print(f"groups: {groups}; lock file: {dest / LOCK_NAME}")
