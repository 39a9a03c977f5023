"""Checkpoint files: atomic writes, discovery of the newest valid one, and pruning.

Layout of ``OUT/checkpoints/``: ``model_{iteration:07d}.pth`` after ``iteration`` completed updates.
Every file holds the full training state (see ``runner``), so any of them can resume a run; the
ones at ``study.eval_iterations`` are also what the evaluation reads and are never pruned.
A write goes to a hidden temporary file in the same folder, is flushed and fsync'ed, then renamed
over the final name, so a crash, a kill or a full disk never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from itersg.files import WriteError, atomic_output

CHECKPOINT_PATTERN = re.compile(r"^model_(\d{7,})\.pth$")
TEMP_PREFIX = ".tmp-"


class CheckpointWriteError(WriteError):
    """A checkpoint could not be written (disk full, quota, permissions); earlier ones are intact."""

    def describe(self) -> str:
        return f"could not write {self.path}: {self.reason}; {self.advice}"


def checkpoint_name(iteration: int) -> str:
    """``model_0001000.pth`` for ``iteration`` 1000."""
    return f"model_{iteration:07d}.pth"


def checkpoint_iteration(path: str | Path) -> int | None:
    """The iteration encoded in a checkpoint file name, or None for other files."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(checkpoint_iteration(p), p) for p in folder.iterdir()]
    return sorted((it, p) for it, p in found if it is not None)


def atomic_save(obj: Any, path: str | Path, advice: str | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    The free space is checked first against the size of the tensors. On any failure the temp file is
    removed, ``path`` keeps its previous content (if any) and ``CheckpointWriteError`` says what
    happened; ``advice`` replaces the default second half of its message (the earlier checkpoints are
    intact, rerun to resume), with ``{fix}`` standing for what to do first ("free space there").
    """
    path = Path(path)
    advice = advice or (f"the earlier checkpoints in {path.parent} are intact: {{fix}} and rerun the same "
                        "command to resume")
    try:
        with atomic_output(path, estimated_size(obj), prefix=TEMP_PREFIX, mode=None, fsync=True) as handle:
            torch.save(obj, handle)
    except WriteError as err:
        raise CheckpointWriteError(err.path, err.reason, err.fix, advice.format(fix=err.fix)) from None
    except Exception as err:  # not a failed write: an object torch cannot save
        fix = "fix the cause"
        raise CheckpointWriteError(path, f"{type(err).__name__}: {_first_line(err)}", fix,
                                   advice.format(fix=fix)) from err
    _fsync_folder(path.parent)
    return path


def estimated_size(obj: Any) -> int:
    """Bytes of the tensor storages in ``obj`` (nested dicts, lists, tuples) plus 64 kB for the rest."""
    storages: dict[int, int] = {}

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)

    visit(obj)
    return sum(storages.values()) + 65536


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | Path) -> None:
    """Delete temp files left behind by a write that was killed (not by an error, which cleans up)."""
    folder = Path(folder)
    if folder.is_dir():
        for temp in folder.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                temp.unlink()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no arbitrary code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def newest_valid_checkpoint(
    folder: str | Path, required_keys: Iterable[str] = ("model", "iteration"), fingerprint: str | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``folder`` that loads, has ``required_keys`` and the ``fingerprint``.

    Unreadable (truncated, corrupt) files are skipped with a warning; files from a run with other
    params (another fingerprint) are skipped too. Returns ``(path, state)`` or None.
    """
    required = tuple(required_keys)
    for iteration, path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path)
        except Exception as err:  # truncated zip, bad pickle, I/O error: all mean "not usable"
            warnings.warn(f"skipping unreadable checkpoint {path} ({type(err).__name__}: {err})",
                          stacklevel=2)
            continue
        missing = [key for key in required if key not in state]
        if missing or state.get("iteration") != iteration:
            warnings.warn(f"skipping checkpoint {path}: missing {missing or 'a matching iteration'}",
                          stacklevel=2)
            continue
        if fingerprint is not None and state.get("fingerprint") != fingerprint:
            warnings.warn(f"skipping checkpoint {path}: it was written with other training params",
                          stacklevel=2)
            continue
        return path, state
    return None


def prune_checkpoints(folder: str | Path, keep_last: int, keep_iterations: Iterable[int] = ()) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints, never those at ``keep_iterations``.

    Returns the deleted paths.
    """
    protected = set(keep_iterations)
    prunable = [(it, p) for it, p in list_checkpoints(folder) if it not in protected]
    doomed = prunable[: max(0, len(prunable) - keep_last)]
    for _, path in doomed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return [path for _, path in doomed]
