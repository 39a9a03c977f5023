"""Writing result files safely: a temporary file beside the target, renamed over it when complete.

A failed write (full disk, read-only folder, a folder where the file should be) leaves the target as
it was and no temporary file behind, and becomes one ``UserError`` line that says what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from itersg.errors import UserError


def writable_file(path: str | Path) -> Path:
    """``path`` as a Path, refusing a folder (a common slip: ``--out results/`` for a file)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the path of the file to write")
    existing = next((folder for folder in path.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a folder; choose another output path")
    return path


def write_failure(path: Path, err: OSError, size_bytes: int | None = None) -> UserError:
    """The one-line error of a failed write of ``path``."""
    if err.errno == errno.ENOSPC:
        need = f" ({size_bytes / 1e6:.1f} MB needed)" if size_bytes else ""
        return UserError(f"{path}: the disk is full{need}; free space there or write elsewhere, then run again")
    return UserError(f"{path}: cannot be written ({err.strerror}); check that its folder exists and is writable")


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; raise UserError (and leave nothing) on failure."""
    path = writable_file(path)
    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temp).chmod(mode)  # mkstemp creates 0600; results are meant to be read by others
        Path(temp).replace(path)
    except OSError as err:
        raise write_failure(path, err, len(text.encode())) from None
    finally:
        if temp is not None and Path(temp).exists():
            Path(temp).unlink()
    return path
