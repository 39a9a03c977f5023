"""Safe unpacking of a downloaded zip archive into a folder.

Every member is checked before anything is written: absolute paths, ``..`` components, symbolic
links and device/special files make the whole archive refused. Files are unpacked into a scratch
folder next to the destination (same file system) and then moved into place, so an interrupted
run never leaves half-written files in the destination.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from itersg.errors import UserError

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Member:
    """One regular file of an archive and where it goes, relative to the destination folder."""

    info: zipfile.ZipInfo
    target: PurePosixPath


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be unpacked, or None when it is a plain file or folder."""
    name = info.filename.replace("\\", "/")
    if "\x00" in name:
        return "NUL byte in the name"
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' component leaves the destination"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    file_type = stat.S_IFMT(mode)
    if file_type and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "device or special file"
    return None


def plan_members(archive: zipfile.ZipFile, strip_components: int = 0) -> list[Member]:
    """Check every member and return the regular files to unpack, in archive order.

    Folders are implied by the file paths; members left with no path after dropping
    ``strip_components`` leading folders (the top folder itself) are skipped. Raises ``UserError``
    naming the first unsafe member.
    """
    members: dict[PurePosixPath, Member] = {}
    for info in archive.infolist():
        reason = _unsafe_reason(info)
        if reason:
            raise UserError(f"unsafe archive member {info.filename!r} ({reason}); refusing to unpack it")
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
        if info.is_dir() or stat.S_ISDIR(info.external_attr >> 16) or len(parts) <= strip_components:
            continue
        target = PurePosixPath(*parts[strip_components:])
        members[target] = Member(info, target)
    return list(members.values())


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or would hold it: its nearest existing parent)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _check_inside(folder: Path, target: Path, checked: set[Path]) -> None:
    """Refuse a target whose parent resolves outside ``folder`` (e.g. through a symlinked subfolder)."""
    parent = target.parent
    if parent in checked:
        return
    if not parent.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"{target} would be written outside {folder} (a symbolic link on the way?)")
    checked.add(parent)


def extract_zip(
    archive_path: Path,
    folder: Path,
    *,
    strip_components: int = 0,
    expect_files: int | None = None,
    reserve: int = 0,
    free_space: Callable[[Path], int] = free_bytes,
) -> int:
    """Unpack the regular files of ``archive_path`` into ``folder`` and return how many there were.

    Args:
        archive_path: the verified zip file.
        folder: destination; created if needed. Existing files of the same name are replaced.
        strip_components: leading folders dropped from member paths.
        expect_files: when given, the archive must hold exactly this many files.
        reserve: bytes that must stay free on the disk after unpacking.
        free_space: free bytes on the disk holding a path (injectable for tests).
    """
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as err:
        message = f"{archive_path} is not a readable zip archive ({err}); delete it and fetch again"
        raise UserError(message) from None
    with archive:
        members = plan_members(archive, strip_components)
        if expect_files is not None and len(members) != expect_files:
            raise UserError(f"{archive_path} holds {len(members)} files, expected {expect_files}")
        needed = sum(m.info.file_size for m in members) + reserve
        available = free_space(folder.parent)
        if available < needed:
            raise UserError(
                f"not enough free space to unpack {archive_path.name} into {folder}: need {needed:,} bytes "
                f"(including a reserve of {reserve:,}), {available:,} free; free some space or use another "
                "--dest"
            )
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".unpack-{folder.name}-") as scratch:
            _unpack(archive, members, Path(scratch))
            _move_into(Path(scratch), members, folder)
    return len(members)


def _unpack(archive: zipfile.ZipFile, members: list[Member], scratch: Path) -> None:
    for member in members:
        path = scratch / member.target
        path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member.info) as source, path.open("xb") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)


def _move_into(scratch: Path, members: list[Member], folder: Path) -> None:
    checked: set[Path] = set()
    for member in members:
        target = folder / member.target
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_inside(folder, target, checked)
        (scratch / member.target).replace(target)
