"""Writing result files safely: a temporary file beside the target, renamed over it when complete.

A failed write (full disk, quota, file-size limit, read-only or missing folder, a file where a folder
should be) leaves the target as it was, no temporary file and no folder it created behind, and becomes
one ``WriteError`` line (a ``UserError``) that names the path, says what went wrong and what to do.

* ``writable_file`` / ``check_writable_folder``: refuse an unusable output path before any work.
* ``check_free_space``: refuse a write whose size is known when the disk has less room.
* ``atomic_output``: a context manager yielding a binary file (``GuardedFile``) at a temporary path,
  renamed to the target on success; used for text, checkpoints and HDF5 files alike.
* ``undo_on_failure``: for files that grow by appending (logs, curves): a failed block is cut back.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from itersg.errors import UserError

SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
PERMISSION_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


class WriteError(UserError):
    """A file or folder could not be written; nothing partial was left at its path.

    ``reason`` says what went wrong, ``fix`` the first thing to do about it ("free space there"),
    ``advice`` the whole second half of the message; ``with_advice`` swaps it for a caller that knows
    better (a training run says from which checkpoint a rerun resumes).
    """

    def __init__(self, path: str | Path, reason: str, fix: str, advice: str | None = None) -> None:
        self.path, self.reason, self.fix = Path(path), reason, fix
        self.advice = advice or f"{fix} or write elsewhere, then run again"
        super().__init__(self.describe())

    def describe(self) -> str:
        """The one-line message."""
        return f"{self.path}: {self.reason}; {self.advice}"

    def with_advice(self, advice: str) -> WriteError:
        """The same failure with another second half of the message."""
        return type(self)(self.path, self.reason, self.fix, advice)


def format_size(num_bytes: float) -> str:
    """``1.2 MB``, ``40.0 kB``, ``512 bytes`` (decimal units, as ``df -H`` prints them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{int(num_bytes)} bytes"


def _existing_folder(path: Path) -> Path:
    """The nearest folder of ``path`` (itself included) that exists."""
    return next((p for p in (path, *path.parents) if p.is_dir()), Path())


def free_bytes(path: str | Path) -> int | None:
    """Free bytes (for this user) on the disk of ``path`` or its nearest existing folder; None if unknown."""
    try:
        usage = shutil.disk_usage(_existing_folder(Path(path)))
    except OSError:
        return None
    return usage.free if usage.total > 0 else None  # pseudo file systems report a total of 0


def _space_reason(path: Path, needed: int | None, why: str = "the disk is full") -> str:
    free = free_bytes(path.parent)
    details = [f"{format_size(needed)} needed"] if needed else []
    details += [f"{format_size(free)} free"] if free is not None else []
    return f"{why} ({', '.join(details)})" if details else why


def not_writable(path: str | Path, folder: Path, err: OSError | None = None) -> WriteError:
    """The error for a folder this process may not write into (read-only file system, permissions)."""
    read_only = (err is not None and err.errno == errno.EROFS) or _is_read_only(folder)
    cause = "read-only file system" if read_only else "permission denied"
    where = "" if Path(path) == folder else f"cannot write there: {folder} "
    return WriteError(path, f"{where}is not writable ({cause})", fix="make it writable",
                      advice="choose another output folder or make it writable, then run again")


def _is_read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def write_failure(path: str | Path, err: OSError, size_bytes: int | None = None) -> WriteError:
    """The one-line error of a failed write of ``path`` (``size_bytes``: its size, when known)."""
    path = Path(path)
    if err.errno == errno.ENOSPC:
        return WriteError(path, _space_reason(path, size_bytes), fix="free space there")
    if err.errno == errno.EDQUOT:
        return WriteError(path, _space_reason(path, size_bytes, "the disk quota is used up"),
                          fix="free space in your quota")
    if err.errno == errno.EFBIG:
        return WriteError(path, "the file is larger than this process may write (file-size limit, "
                          "`ulimit -f`)", fix="raise the limit")
    if err.errno in PERMISSION_ERRNOS:
        return not_writable(path, _existing_folder(path.parent), err)
    cause = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return WriteError(path, f"cannot be written ({cause})", fix="check that its folder exists and is writable")


def check_writable_folder(folder: str | Path) -> Path:
    """``folder`` as a Path, after checking that it can be created or written into; creates nothing.

    Raises ``WriteError`` naming the folder when its nearest existing folder is read-only or not
    writable for this user, or when a file stands where a folder should be.
    """
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise WriteError(folder, f"{blocker} is a file, not a folder", fix="choose another output path",
                         advice="choose another output path")
    existing = _existing_folder(folder)
    if _is_read_only(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise not_writable(folder, existing)
    return folder


def writable_file(path: str | Path) -> Path:
    """``path`` as a Path, refusing a folder (a common slip: ``--out results/`` for a file) and a place
    that cannot be written (read-only, no permission, a file in the way)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the path of the file to write")
    existing = next((folder for folder in path.parents if folder.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a folder; choose another output path")
    folder = _existing_folder(path.parent)
    if _is_read_only(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise not_writable(path, folder)
    return path


def check_free_space(path: str | Path, bytes_needed: int) -> None:
    """Raise ``WriteError`` (disk full, with both sizes) if the disk of ``path`` has less than ``bytes_needed``."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < bytes_needed:
        raise WriteError(path, _space_reason(Path(path), bytes_needed), fix="free space there")


def make_folders(folder: Path, target: Path | None = None) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the created ones (outermost first).

    A failure is a ``WriteError`` naming ``target`` (default: ``folder``) and leaves nothing created.
    """
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    created: list[Path] = []
    try:
        for path in missing:
            path.mkdir()
            created.append(path)
    except FileExistsError:
        pass  # another process made it meanwhile
    except OSError as err:
        remove_folders(created)
        raise write_failure(target or folder, err) from None
    return created


def remove_folders(created: list[Path]) -> None:
    """Remove the folders of ``make_folders`` again, innermost first, where they are still empty."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


class GuardedFile(io.RawIOBase):
    """A binary file that writes every byte or raises, and remembers the first failed write in ``error``.

    Libraries that report a failed write in their own words (``torch.save``: a RuntimeError of its zip
    writer; HDF5: an error stack) leave the real cause here. After a failed write (or ``discard()``)
    the file is lost anyway: later writes succeed without writing anything, so that a library which
    writes again while it cleans up finishes cleanly instead of failing a second time half-way
    through; ``atomic_output`` then deletes the file.

    ``quiet``: a failed write is not even reported to the writing library (it is recorded, and the
    caller checks ``error`` after each step). For HDF5: a write error inside the library, above all
    one while it frees an object, can leave it in a state where the next call crashes the process.
    """

    def __init__(self, path: str | Path, mode: str = "r+b", quiet: bool = False) -> None:
        super().__init__()
        self._raw = open(path, mode, buffering=0)  # noqa: SIM115 - closed by close()
        self.error: OSError | None = None
        self._discarding = False
        self._quiet = quiet

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self._raw.readinto(buffer)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        if self._discarding:
            self._raw.seek(len(view), io.SEEK_CUR)
            return len(view)
        done = 0
        try:
            while done < len(view):
                done += self._raw.write(view[done:]) or 0
        except OSError as err:
            self.error, self._discarding = self.error or err, True
            if not self._quiet:
                raise
            self._raw.seek(len(view) - done, io.SEEK_CUR)
        return len(view)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def truncate(self, size: int | None = None) -> int:
        if self._discarding:
            return self._raw.tell() if size is None else size
        try:
            return self._raw.truncate(size)
        except OSError as err:
            self.error, self._discarding = self.error or err, True
            if not self._quiet:
                raise
            return self._raw.tell() if size is None else size

    def fileno(self) -> int:
        return self._raw.fileno()

    def discard(self) -> None:
        """From now on accept writes without writing (the file is about to be deleted)."""
        self._discarding = True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


@contextlib.contextmanager
def atomic_output(path: str | Path, size_hint: int | None = None, *, prefix: str | None = None,
                  mode: int | None = 0o644, fsync: bool = False, quiet: bool = False) -> Iterator[GuardedFile]:
    """Yield a ``GuardedFile`` at a temporary path beside ``path``; on success rename it to ``path``.

    ``size_hint`` (bytes, when known) is checked against the free space first and named in a disk-full
    message. If the block or the rename fails, the temporary file and the folders created for it are
    removed; a failed write (seen by the file even where a library reports it otherwise) becomes a
    ``WriteError``, any other exception passes unchanged. ``mode``: permissions of the result (None:
    owner only, as ``mkstemp`` creates it); ``fsync``: flush to the disk before the rename; ``quiet``:
    see ``GuardedFile``.
    """
    path = writable_file(path)
    created = make_folders(path.parent, path)
    temp: Path | None = None
    handle: GuardedFile | None = None
    try:
        if size_hint:
            check_free_space(path, size_hint)
        fd, name = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        temp = Path(name)
        handle = GuardedFile(temp, quiet=quiet)
        yield handle
        if handle.error is not None:  # a write failed, even if the library went on as if not
            raise handle.error
        if fsync:
            os.fsync(handle.fileno())
        handle.close()
        if mode is not None:
            temp.chmod(mode)
        temp.replace(path)
    except BaseException as exc:
        error = handle.error if handle is not None and handle.error is not None else exc
        _discard(handle, temp, created)  # first, so that the message counts the space it held as free
        if isinstance(error, OSError):
            raise write_failure(path, error, size_hint) from None
        raise


def _discard(handle: GuardedFile | None, temp: Path | None, created: list[Path]) -> None:
    if handle is not None:
        handle.close()
    if temp is not None:
        with contextlib.suppress(OSError):
            temp.unlink()
    remove_folders(created)


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; raise WriteError (and leave nothing) on failure."""
    data = text.encode()
    with atomic_output(path, len(data), mode=mode) as handle:
        handle.write(data)
    return Path(path)


def _files_and_folders(paths: tuple[Path, ...]) -> tuple[dict[Path, tuple[int, int, int]], set[Path]]:
    """``{file: (size, mtime_ns, inode)}`` and the folders at or under ``paths``."""
    files: dict[Path, tuple[int, int, int]] = {}
    folders: set[Path] = set()
    for root in paths:
        items = [root] if root.is_file() else [root, *root.rglob("*")] if root.is_dir() else []
        for item in items:
            if item.is_dir():
                folders.add(item)
            elif item.is_file():
                stat = item.stat()
                files[item] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return files, folders


def _restore(paths: tuple[Path, ...], files: dict[Path, tuple[int, int, int]], folders: set[Path]) -> Path | None:
    """Cut files back to their sizes in ``files``; delete files and folders that were not there.

    A file replaced whole (another inode: an atomic write that succeeded) is complete and stays.

    Returns the file changed last (the one whose write failed, as far as can be told), or None.
    """
    now_files, now_folders = _files_and_folders(paths)
    # Last written first; among files written in the same clock tick, a new empty one (its open
    # succeeded, its write did not).
    changed = sorted((p for p, state in now_files.items() if files.get(p) != state),
                     key=lambda p: (now_files[p][1], p not in files and now_files[p][0] == 0))
    for path in changed:
        with contextlib.suppress(OSError):
            if path not in files:
                path.unlink()
            elif now_files[path][2] == files[path][2] and now_files[path][0] > files[path][0]:
                os.truncate(path, files[path][0])  # frees space: cannot fail for a full disk
    for folder in sorted(now_folders - folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return changed[-1] if changed else None


@contextlib.contextmanager
def undo_on_failure(*paths: Path) -> Iterator[None]:
    """Run a block that appends to or creates files at or under ``paths`` (files or folders), all or nothing.

    If the block fails to write, every file there is cut back to its size before the block, files and
    folders it created are deleted (no empty or torn file stays behind) and a ``WriteError`` names the
    path that failed. Files replaced by ``write_text_atomic`` inside the block keep their old content.
    """
    files, folders = _files_and_folders(paths)
    try:
        yield
    except WriteError:
        _restore(paths, files, folders)
        raise
    except OSError as err:
        last_changed = _restore(paths, files, folders)
        raise write_failure(err.filename or last_changed or paths[0], err) from None
