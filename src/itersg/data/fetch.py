"""Download, verify and put in place the inputs listed in ``manifest.yaml`` (``itersg fetch``).

Layout under the destination folder ``DEST``:

- ``DEST/<entry.dest>``: a verified file, or the folder a zip archive was unpacked into;
- ``DEST/fetch.lock.json``: size and sha256 of every input verified so far. Inputs without a
  pinned sha256 are trusted on first use: later copies must match the lock. Commit this file (or
  track it with DVC) to pin what was downloaded;
- ``DEST/.partial/NAME.part``: bytes of an unfinished download (resumed with an HTTP Range
  request) and ``NAME.part.json``, the URL they came from. A download only reaches its final path
  after its size and checksum were verified; a rejected one is kept as ``NAME.bad``;
- ``DEST/archives/NAME.zip``: a verified archive waiting to be unpacked (removed after unpacking
  unless ``keep_archives``);
- ``DEST/.fetch-state.json``: which archives this machine has unpacked (not meant to be shared).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from tqdm import tqdm

from itersg.catalog import VARIANTS
from itersg.data.extract import extract_zip, free_bytes
from itersg.errors import UserError
from itersg.files import FORCE_OPTION, check_output_folder, write_text_atomic

MANIFEST = Path(__file__).with_name("manifest.yaml")
LOCK_NAME = "fetch.lock.json"
STATE_NAME = ".fetch-state.json"
PARTIAL_DIR = ".partial"
ARCHIVE_DIR = "archives"
USER_AGENT = "itersg-fetch/1 (+python urllib)"

_CHUNK = 1 << 20
_MAX_DELAY = 60.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_WEB_PAGE_STARTS = (b"<!doctype html", b"<html")


# --------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class Entry:
    """One input of the manifest (the fields are documented at the top of ``manifest.yaml``)."""

    name: str
    kind: str
    urls: tuple[str, ...]
    dest: str
    group: str | None = None
    size: int | None = None
    sha256: str | None = None
    manual: bool = False
    instructions: str | None = None
    strip_components: int = 0
    unpacked_size: int | None = None
    expect_files: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class FolderCheck:
    """A folder several archives unpack into, with the number of files it holds once all are unpacked."""

    path: str
    expect_files: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, Entry]
    folders: tuple[FolderCheck, ...] = ()
    path: Path = MANIFEST

    @property
    def groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for entry in self.entries.values():
            if entry.group:
                groups.setdefault(entry.group, []).append(entry.name)
        return groups

    def select(self, names: Iterable[str]) -> list[Entry]:
        """The entries named directly or through their group, in manifest order."""
        wanted: set[str] = set()
        groups = self.groups
        for name in names:
            if name in self.entries:
                wanted.add(name)
            elif name in groups:
                wanted.update(groups[name])
            else:
                raise UserError(
                    f"unknown input {name!r} (manifest {self.path}); inputs: {', '.join(self.entries)}; "
                    f"groups: {', '.join(groups)}; `itersg fetch --list` describes them"
                )
        return [entry for entry in self.entries.values() if entry.name in wanted]


def _field_error(path: Path, where: str, key: str, what: str) -> UserError:
    return UserError(f"{path}: {where}: field `{key}` {what}; fix the manifest")


def _optional_int(raw: dict, key: str, path: Path, where: str) -> int | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise _field_error(path, where, key, f"must be a non-negative integer or null, not {value!r}")
    return value


def _relative_path(raw: dict, key: str, path: Path, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise _field_error(path, where, key, "must be a relative path")
    posix = PurePosixPath(value)
    if posix.is_absolute() or ".." in posix.parts or "\\" in value:
        raise _field_error(path, where, key, f"must be a relative path inside --dest, not {value!r}")
    return str(posix)


def _parse_entry(raw: Any, path: Path, index: int) -> Entry:
    where = f"entry {index}"
    if not isinstance(raw, dict):
        raise UserError(f"{path}: {where} must be a mapping of fields; fix the manifest")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        what = f"must be lower-case letters, digits, '.', '_' or '-', not {name!r}"
        raise _field_error(path, where, "name", what)
    where = f"entry {index} ({name})"
    unknown = set(raw) - {f.name for f in fields(Entry)}
    if unknown:
        raise _field_error(path, where, sorted(unknown)[0], "is not a manifest field")
    kind = raw.get("kind")
    if kind not in ("file", "zip"):
        raise _field_error(path, where, "kind", f"must be `file` or `zip`, not {kind!r}")
    urls = raw.get("urls")
    if not isinstance(urls, list) or not urls or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls
    ):
        raise _field_error(path, where, "urls", "must be a non-empty list of http(s) URLs")
    sha256 = raw.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        raise _field_error(path, where, "sha256", "must be 64 lower-case hex digits or null")
    manual = raw.get("manual", False)
    if not isinstance(manual, bool):
        raise _field_error(path, where, "manual", "must be true or false")
    instructions = raw.get("instructions")
    if manual and not isinstance(instructions, str):
        raise _field_error(path, where, "instructions", "is required for a manual entry")
    for key in ("group", "note"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise _field_error(path, where, key, "must be a string")
    strip = _optional_int(raw, "strip_components", path, where) or 0
    unpacked_size = _optional_int(raw, "unpacked_size", path, where)
    expect_files = _optional_int(raw, "expect_files", path, where)
    if kind == "file" and (strip or unpacked_size is not None or expect_files is not None):
        what = "is `file`; strip_components, unpacked_size and expect_files are for zips only"
        raise _field_error(path, where, "kind", what)
    if kind == "zip" and manual:
        raise _field_error(path, where, "manual", "is not supported for zip entries")
    return Entry(
        name=name,
        kind=kind,
        urls=tuple(urls),
        dest=_relative_path(raw, "dest", path, where),
        group=raw.get("group"),
        size=_optional_int(raw, "size", path, where),
        sha256=sha256,
        manual=manual,
        instructions=instructions,
        strip_components=strip,
        unpacked_size=unpacked_size,
        expect_files=expect_files,
        note=raw.get("note"),
    )


def _parse_folder(raw: Any, path: Path, index: int, entries: dict[str, Entry]) -> FolderCheck:
    where = f"folders[{index}]"
    if not isinstance(raw, dict):
        raise UserError(f"{path}: {where} must be a mapping; fix the manifest")
    expect_files = _optional_int(raw, "expect_files", path, where)
    if expect_files is None:
        raise _field_error(path, where, "expect_files", "is required")
    sources = raw.get("from")
    if not isinstance(sources, list) or not sources or any(entries.get(s) is None for s in sources):
        raise _field_error(path, where, "from", f"must list zip entries of the manifest, not {sources!r}")
    folder = _relative_path(raw, "path", path, where)
    if any(entries[s].kind != "zip" or entries[s].dest != folder for s in sources):
        raise _field_error(path, where, "from", f"must name zip entries whose dest is {folder}")
    return FolderCheck(path=folder, expect_files=expect_files, sources=tuple(sources))


def released_variants(entry_name: str) -> list[str]:
    """The catalogue's variants whose released trained checkpoint the manifest entry ``entry_name`` holds."""
    return [name for name, variant in VARIANTS.items() if variant.released == entry_name]


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and check a manifest (default: the packaged one); raises ``UserError`` naming a bad field."""
    path = Path(path) if path is not None else MANIFEST
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"{path}: cannot read the manifest ({err.strerror}); check --manifest, or leave it out "
                        "to use the packaged one") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); fix the manifest") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise UserError(f"{path}: a manifest needs a list `entries`; fix the manifest")
    entries: dict[str, Entry] = {}
    for index, item in enumerate(raw["entries"]):
        entry = _parse_entry(item, path, index)
        if entry.name in entries:
            raise UserError(f"{path}: entry {index}: the name {entry.name!r} is used twice; fix the manifest")
        entries[entry.name] = entry
    folders = tuple(_parse_folder(f, path, i, entries) for i, f in enumerate(raw.get("folders") or []))
    manifest = Manifest(entries=entries, folders=folders, path=path)
    clash = set(manifest.groups) & set(entries)
    if clash:
        raise UserError(f"{path}: {sorted(clash)[0]!r} is both a group and an entry name; fix the manifest")
    return manifest


# --------------------------------------------------------------------------------------------
# Small JSON records next to the downloads


class _Record:
    """A JSON file ``{"comment": ..., "entries": {name: {...}}}`` rewritten atomically on each change."""

    def __init__(self, path: Path, comment: str):
        self.path = path
        self.entries: dict[str, dict] = {}
        self._comment = comment
        if path.exists():
            try:
                self.entries = dict(json.loads(path.read_text())["entries"])
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(f"{path} is damaged ({err}); fix it or delete it to start over") from None

    def get(self, name: str) -> dict | None:
        return self.entries.get(name)

    def put(self, name: str, value: dict) -> None:
        self.entries[name] = value
        text = json.dumps({"comment": self._comment, "entries": self.entries}, indent=2, sort_keys=True)
        write_text_atomic(self.path, text + "\n")


def locked_entries(dest: Path) -> dict[str, dict]:
    """What ``dest/fetch.lock.json`` records, by entry name (empty when there is no lock file)."""
    return _Record(Path(dest) / LOCK_NAME, "").entries


# --------------------------------------------------------------------------------------------
# Fetching


@dataclass(frozen=True)
class FetchOptions:
    """How hard to try and how careful to be.

    Attributes:
        attempts: tries per URL on connection errors, timeouts and HTTP 5xx.
        retry_delay: seconds before the first retry; doubled after each (at most 60 s).
        timeout: seconds a connection may stay silent.
        reserve: bytes that must stay free on the disk besides the download (and what it unpacks to).
        keep_archives: keep verified zip archives in ``DEST/archives`` after unpacking.
        skip_manual: report missing manual inputs without failing.
        force: replace a file at an input's path that is neither the expected one nor one fetch verified
            earlier, and unpack into a non-empty folder that fetch did not unpack into (default: refuse).
        free_space: free bytes on the disk holding a path (injectable for tests).
    """

    attempts: int = 5
    retry_delay: float = 2.0
    timeout: float = 60.0
    reserve: int = 256 * 2**20
    keep_archives: bool = False
    skip_manual: bool = False
    force: bool = False
    free_space: Callable[[Path], int] = field(default=free_bytes)


@dataclass(frozen=True)
class _Expected:
    size: int | None
    sha256: str | None
    source: str  # where sha256 comes from, for messages


class _Retry(Exception):
    """A transient failure: try the same URL again."""


class _SourceFailed(Exception):
    """This URL cannot give the file; try the next one."""


class _Mismatch(Exception):
    """A complete file is not the expected one."""


def human_size(size: int | None) -> str:
    """``1.5 GiB``-style size for messages; ``?`` when unknown."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _is_web_page_start(chunk: bytes) -> bool:
    return chunk[:512].lstrip().lower().startswith(_WEB_PAGE_STARTS)


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


class _Fetcher:
    """Fetches the entries of one manifest into one destination folder."""

    def __init__(self, manifest: Manifest, dest: Path, options: FetchOptions, log: Callable[[str], None]):
        self.manifest = manifest
        self.dest = dest
        self.options = options
        self.log = log
        self.lock = _Record(
            dest / LOCK_NAME,
            "Inputs `itersg fetch` verified: size and sha256 (trust on first use where the manifest pins "
            "none). Commit this file or track it with DVC: later downloads must match it.",
        )
        self.state = _Record(dest / STATE_NAME, "Archives unpacked on this machine (local; do not share).")
        self.partial = dest / PARTIAL_DIR

    # -- expectations and verification ---------------------------------------------------------

    def expected(self, entry: Entry) -> _Expected:
        locked = self.lock.get(entry.name) or {}
        size = entry.size if entry.size is not None else locked.get("size")
        if entry.sha256:
            return _Expected(size, entry.sha256, "the manifest")
        return _Expected(size, locked.get("sha256"), f"the lock file {self.lock.path}")

    def verify(self, entry: Entry, path: Path) -> str:
        """Check size, content and sha256 of a complete file; returns its sha256 or raises ``_Mismatch``."""
        expected = self.expected(entry)
        note = f" (note: {entry.note})" if entry.note else ""
        size = path.stat().st_size
        if expected.size is not None and size != expected.size:
            raise _Mismatch(f"it has {size:,} bytes, expected {expected.size:,}{note}")
        with path.open("rb") as handle:
            if _is_web_page_start(handle.read(512)):
                raise _Mismatch("it is a web page, not the file")
        if size > 64 * 2**20:
            self.log(f"{entry.name}: computing the sha256 of {human_size(size)} ...")
        digest = sha256_of(path)
        if expected.sha256 and digest != expected.sha256:
            raise _Mismatch(f"its sha256 is {digest}, expected {expected.sha256} ({expected.source}){note}")
        return digest

    def record(self, entry: Entry, path: Path, digest: str, files: int | None = None) -> None:
        """Record a verified input in the lock file (trust on first use where nothing was pinned)."""
        if not entry.sha256 and not (self.lock.get(entry.name) or {}).get("sha256"):
            where = self.lock.path
            self.log(f"{entry.name}: no pinned sha256; recorded {digest} in {where} (trust on first use)")
        value = {"dest": entry.dest, "size": path.stat().st_size, "sha256": digest}
        if files is not None:
            value["files"] = files
        self.lock.put(entry.name, value)

    # -- one entry -----------------------------------------------------------------------------

    def fetch_file(self, entry: Entry) -> None:
        final = self.dest / entry.dest
        if final.exists():
            try:
                digest = self.verify(entry, final)
            except _Mismatch as err:
                self._check_replaceable(entry, final, err)
                self.log(f"{entry.name}: {final} is not the expected file ({err}); downloading it again")
            else:
                self.record(entry, final, digest)
                self.log(f"{entry.name}: already verified (sha256 {digest})")
                return
        part, digest = self.download(entry, final)
        final.parent.mkdir(parents=True, exist_ok=True)
        part.replace(final)
        self.record(entry, final, digest)
        self.log(f"{entry.name}: verified (sha256 {digest}) -> {final}")

    def check_manual(self, entry: Entry) -> str | None:
        """Verify a manual input put in place by hand; return the instructions when it is absent."""
        final = self.dest / entry.dest
        if not final.exists():
            others = f" (other sources: {', '.join(entry.urls[1:])})" if len(entry.urls) > 1 else ""
            return (
                f"{entry.name}: must be downloaded by hand from {entry.urls[0]}{others}. "
                f"{entry.instructions.rstrip('.')}. Put it at {final}, then run "
                f"`itersg fetch {entry.name} --dest {self.dest}` to verify it"
            )
        try:
            digest = self.verify(entry, final)
        except _Mismatch as err:
            raise UserError(
                f"{entry.name}: {final} is not the expected file: {err}; download it again by hand from "
                f"{entry.urls[0]}"
            ) from None
        self.record(entry, final, digest)
        self.log(f"{entry.name}: verified (sha256 {digest})")
        for variant in released_variants(entry.name):
            self.log(f"{entry.name}: evaluate it with `itersg evaluate --variant {variant} --checkpoint {final} "
                     "--out DIR`")
        return None

    def fetch_zip(self, entry: Entry) -> None:
        folder = self.dest / entry.dest
        done = self.state.get(entry.name)
        expected = self.expected(entry)
        same = done is not None and expected.sha256 in (None, done.get("sha256"))
        if same and self._unpacked(folder):
            files = done["files"]
            self.log(f"{entry.name}: already verified (sha256 {done['sha256']}; {files:,} files in {folder})")
            return
        if same:
            self.log(f"{entry.name}: {folder} lacks files unpacked earlier; unpacking the archive again")
        check_output_folder(folder, owned=self._unpacked_into, what="a folder `itersg fetch` unpacked into",
                            force=self.options.force, option="--dest")
        archive = self.dest / ARCHIVE_DIR / f"{entry.name}.zip"
        digest = None
        if archive.exists():
            try:
                digest = self.verify(entry, archive)
                self.log(f"{entry.name}: using the verified archive {archive}")
            except _Mismatch as err:
                self.log(f"{entry.name}: {archive} is not the expected archive ({err}); downloading it again")
                archive.unlink()
        if digest is None:
            part, digest = self.download(entry, archive, unpacked=entry.unpacked_size or 0)
            archive.parent.mkdir(parents=True, exist_ok=True)
            part.replace(archive)
        self.record(entry, archive, digest)
        locked_files = (self.lock.get(entry.name) or {}).get("files")
        self.log(f"{entry.name}: unpacking {archive.name} into {folder} ...")
        try:
            files = extract_zip(
                archive,
                folder,
                strip_components=entry.strip_components,
                expect_files=entry.expect_files if entry.expect_files is not None else locked_files,
                reserve=self.options.reserve,
                free_space=self.options.free_space,
            )
        except UserError as err:
            raise UserError(f"{entry.name}: {err}") from None
        self.record(entry, archive, digest, files)
        self.state.put(entry.name, {"sha256": digest, "folder": entry.dest, "files": files})
        if not self.options.keep_archives:
            archive.unlink()
        self.log(f"{entry.name}: verified (sha256 {digest}); unpacked {files:,} files into {folder}")

    def _check_replaceable(self, entry: Entry, final: Path, err: _Mismatch) -> None:
        """Refuse to download over a file that fetch did not verify earlier (the lock holds its sha256)."""
        locked = (self.lock.get(entry.name) or {}).get("sha256")
        if self.options.force or (locked and sha256_of(final) == locked):
            return
        raise UserError(f"{final}: exists and is not the expected file of {entry.name} ({err}), nor one `itersg "
                        f"fetch` verified earlier; move it away or choose another --dest, or pass {FORCE_OPTION} to "
                        "replace it with a download")

    def _unpacked_into(self, folder: Path) -> bool:
        """Whether an archive was unpacked into ``folder`` on this machine (``DEST/.fetch-state.json``)."""
        rel = folder.relative_to(self.dest).as_posix()
        return any(v.get("folder") == rel for v in self.state.entries.values())

    def _unpacked(self, folder: Path) -> bool:
        """Whether ``folder`` still holds at least every file the recorded archives unpacked into it."""
        if not folder.is_dir():
            return False
        rel = folder.relative_to(self.dest).as_posix()
        recorded = sum(v.get("files", 0) for v in self.state.entries.values() if v.get("folder") == rel)
        return _count_files(folder) >= recorded

    def check_folders(self, entries: list[Entry]) -> list[tuple[str, str]]:
        """Count the files of folders whose archives are all unpacked; return the problems."""
        names = {e.name for e in entries}
        problems = []
        for check in self.manifest.folders:
            if not names & set(check.sources) or any(self.state.get(s) is None for s in check.sources):
                continue
            count = _count_files(self.dest / check.path)
            if count != check.expect_files:
                problems.append((check.path, (
                    f"{self.dest / check.path} holds {count:,} files after unpacking "
                    f"{', '.join(check.sources)}; expected {check.expect_files:,}: remove the folder and "
                    f"{self.state.path}, then fetch again"
                )))
            else:
                self.log(f"{self.dest / check.path}: {count:,} files, as expected")
        return problems

    # -- downloading ---------------------------------------------------------------------------

    def download(self, entry: Entry, final: Path, unpacked: int = 0) -> tuple[Path, str]:
        """Download ``entry`` from its first URL that gives the verified file; return (path, sha256).

        The file is left in ``DEST/.partial``; the caller moves it into place.
        """
        part = self.partial / f"{entry.name}.part"
        failures = []
        for url in entry.urls:
            try:
                self._download_url(entry, url, part, unpacked)
            except _SourceFailed as err:
                failures.append(str(err))
                continue
            try:
                digest = self.verify(entry, part)
            except _Mismatch as err:
                bad = part.with_suffix(".bad")
                part.replace(bad)
                _sidecar(part).unlink(missing_ok=True)
                failures.append(f"the download from {url} was rejected: {err}; it is kept at {bad}")
                continue
            _sidecar(part).unlink(missing_ok=True)
            return part, digest
        hint = f"download it by hand from {entry.urls[0]} and put it at {final}"
        raise UserError(f"{entry.name}: {'; '.join(failures)}; nothing was written to {final}; {hint}")

    def _download_url(self, entry: Entry, url: str, part: Path, unpacked: int) -> None:
        delay = self.options.retry_delay
        for attempt in range(1, self.options.attempts + 1):
            try:
                self._download_once(entry, url, part, unpacked)
                return
            except _Retry as err:
                if attempt == self.options.attempts:
                    raise _SourceFailed(
                        f"{err} from {url}; gave up after {attempt} attempts (run again to resume)"
                    ) from None
                retries = self.options.attempts - 1
                self.log(f"{entry.name}: {err} from {url}; retry {attempt}/{retries} in {delay:g} s")
                time.sleep(delay)
                delay = min(2 * delay, _MAX_DELAY)

    def _check_space(self, entry: Entry, remaining: int, unpacked: int) -> None:
        needed = remaining + unpacked + self.options.reserve
        available = self.options.free_space(self.dest)
        if available < needed:
            raise UserError(
                f"{entry.name}: not enough free space in {self.dest}: need {needed:,} bytes ({remaining:,} "
                f"to download, {unpacked:,} to unpack, {self.options.reserve:,} reserve), {available:,} "
                "free; free some space, use another --dest or lower --reserve"
            )

    def _resume_offset(self, url: str, part: Path, size: int | None) -> tuple[int, str | None]:
        """Bytes of ``part`` usable for resuming a download of ``url``, and the validator for If-Range."""
        meta_path = _sidecar(part)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if not part.exists() or meta.get("url") != url:
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return 0, None
        offset = part.stat().st_size
        if size is not None and offset > size:
            part.unlink()
            return 0, None
        return offset, meta.get("validator")

    def _download_once(self, entry: Entry, url: str, part: Path, unpacked: int) -> None:
        size = self.expected(entry).size
        offset, validator = self._resume_offset(url, part, size)
        if size is not None and offset == size:
            return
        if size is not None:
            self._check_space(entry, size - offset, unpacked)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        response = self._open(url, headers, part)
        with response:
            start = self._body_start(entry, response, offset, part)
            is_page = response.headers.get_content_type() == "text/html"
            if is_page and not entry.dest.endswith((".html", ".htm")):
                raise _SourceFailed(_web_page_message(url))
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            total = start + length if length is not None else None
            if start == 0 and size is not None and total is not None and total != size:
                raise _SourceFailed(f"{url} serves {total:,} bytes, expected {size:,}")
            if size is None and length is not None:
                self._check_space(entry, length, unpacked)
            write_text_atomic(_sidecar(part), json.dumps({"url": url, "validator": _validator(response.headers)}))
            received = self._stream(entry, url, response, part, start, total)
        if length is not None and received < length:
            raise _Retry(f"connection closed after {start + received:,} of {total:,} bytes")

    def _open(self, url: str, headers: dict[str, str], part: Path) -> http.client.HTTPResponse:
        try:
            request = urllib.request.Request(url, headers=headers)
            return urllib.request.urlopen(request, timeout=self.options.timeout)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code == 416:
                part.unlink(missing_ok=True)
                raise _Retry("the server refused to resume (HTTP 416); starting over") from None
            if err.code >= 500 or err.code in (408, 429):
                raise _Retry(f"HTTP {err.code}") from None
            raise _SourceFailed(f"HTTP {err.code} from {url}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise _Retry(f"connection failed ({getattr(err, 'reason', err)})") from None

    def _body_start(self, entry: Entry, response: http.client.HTTPResponse, offset: int, part: Path) -> int:
        """Byte offset the response body starts at: ``offset`` for a matching 206, else 0."""
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if offset and match and int(match.group(1)) == offset:
                return offset
            part.unlink(missing_ok=True)
            raise _Retry(f"unexpected Content-Range {response.headers.get('Content-Range')!r}; starting over")
        if offset:
            self.log(f"{entry.name}: the server does not resume downloads; starting over")
        return 0

    def _stream(
        self,
        entry: Entry,
        url: str,
        response: http.client.HTTPResponse,
        part: Path,
        start: int,
        total: int | None,
    ) -> int:
        """Append the body to ``part`` (truncated first when ``start`` is 0); returns the bytes received."""
        received = 0
        part.parent.mkdir(parents=True, exist_ok=True)
        try:
            chunk = response.read(_CHUNK)
            if start == 0 and _is_web_page_start(chunk):
                raise _SourceFailed(_web_page_message(url))
            bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=entry.name, disable=None, leave=False)
            with bar, part.open("ab" if start else "wb") as sink:
                while chunk:
                    sink.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as err:
            raise _Retry(f"connection lost after {start + received:,} bytes ({err})") from None
        return received


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _validator(headers: http.client.HTTPMessage) -> str | None:
    """A strong ETag or Last-Modified date: sent as If-Range so a changed file restarts the download."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _web_page_message(url: str) -> str:
    return f"the server returned a web page instead of the file ({url})"


def fetch(
    names: Iterable[str],
    dest: Path,
    *,
    manifest: Manifest | None = None,
    options: FetchOptions | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Download, verify and put in place the named inputs (entry or group names) under ``dest``.

    Every entry is tried even when an earlier one fails; problems are reported at the end as one
    ``UserError`` (each problem printed to stderr first when there are several).
    """
    manifest = manifest or load_manifest()
    options = options or FetchOptions()
    entries = manifest.select(names)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(manifest, dest, options, log)
    problems: list[tuple[str, str]] = []
    for entry in entries:
        try:
            if entry.manual:
                missing = fetcher.check_manual(entry)
                if missing and options.skip_manual:
                    log(f"{missing} (skipped: --skip-manual)")
                elif missing:
                    problems.append((entry.name, missing))
            elif entry.kind == "zip":
                fetcher.fetch_zip(entry)
            else:
                fetcher.fetch_file(entry)
        except UserError as err:
            problems.append((entry.name, str(err)))
    problems += fetcher.check_folders(entries)
    if len(problems) == 1:
        raise UserError(problems[0][1])
    if problems:
        for _, message in problems:
            print(f"itersg: error: {message}", file=sys.stderr)
        failed = ", ".join(name for name, _ in problems)
        raise UserError(f"{len(problems)} inputs are missing or failed: {failed} (see the messages above)")
