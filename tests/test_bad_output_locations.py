"""Full disks and read-only output folders: one `itersg: error:` line, nothing partial left behind.

Every case runs the command line in a subprocess (a crash must show as a negative exit status, not
take pytest down) with its output on a small tmpfs that is either full or mounted read-only, then
checks: exit status 2, stderr exactly one `itersg: error: ...` line naming the output, no traceback,
no file at a final output path (pre-existing ones unchanged), no temporary, empty or torn file.
Mounting needs root (and a kernel that allows it); elsewhere these tests are skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli_inputs import TINY, Inputs, build_inputs, demo_sets

# `itersg evaluate` with the free-space check switched off: the write itself hits the full disk
# inside HDF5 (the case that used to crash the interpreter).
WITHOUT_SPACE_CHECK = (
    "import sys, itersg.evaluation.predictions as p; p.check_free_space = lambda path, needed: None; "
    "from itersg.cli import main; sys.exit(main(sys.argv[1:]))"
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs mounts are Linux only")
_sets = demo_sets


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return build_inputs(tmp_path_factory.mktemp("inputs"))


# --- a small disk ------------------------------------------------------------------------------------

def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``folder`` for the block; always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here")
    folder.mkdir(parents=True)
    mounted = _run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        if _run(["umount", str(folder)]).returncode != 0:
            _run(["umount", "-l", str(folder)])


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the disk of ``folder`` up to ``leave`` free bytes with one file outside the outputs."""
    free = shutil.disk_usage(folder).free - leave
    with open(folder / "filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * free)


def remount_read_only(folder: Path) -> None:
    result = _run(["mount", "-o", "remount,ro", str(folder)])
    if result.returncode != 0:
        pytest.skip(f"remounting a tmpfs read-only is not allowed here ({result.stderr.strip()})")


# --- the cases ---------------------------------------------------------------------------------------

@dataclass
class Case:
    """One command writing to a bad place: ``argv(inputs, disk)``; ``finals`` must not appear there."""

    argv: Callable[[Inputs, Path], list[str]]
    finals: tuple[str, ...]
    named: str                      # the path (under the disk) the error line must name
    says: str                       # and what it must say
    size: str = "64k"
    read_only: bool = False
    leave: int | None = None        # fill the disk up to this many free bytes first
    existing: dict[str, str] = field(default_factory=dict)  # files there before (must stay unchanged)
    python: tuple[str, ...] = ("-m", "itersg")


def _train(verb: str, *extra: str) -> Callable[[Inputs, Path], list[str]]:
    variant = ["--variant", "r101-detr"] if verb == "train" else []
    return lambda i, d: [verb, *variant, "--out", str(d / "run"), *_sets(i.data, *extra)]


def _evaluate(i: Inputs, d: Path) -> list[str]:
    return ["evaluate", "--variant", "r101-detr", "--checkpoint", str(i.checkpoint), "--out", str(d / "ev"),
            *_sets(i.data)]


def _metrics(i: Inputs, d: Path) -> list[str]:
    return ["metrics", "--data", str(i.data), "--predictions", str(i.predictions), "--out",
            str(d / "m" / "metrics.json"), "--num-val", "6"]


def _report(i: Inputs, d: Path) -> list[str]:
    return ["report", "--metrics", str(i.metrics), "--out", str(d / "r" / "report.html")]


def _predict(i: Inputs, d: Path) -> list[str]:
    image = sorted((i.data / "VG_100K").glob("*.jpg"))[0]
    return ["predict", "--checkpoint", str(i.checkpoint), "--variant", "r101-detr", str(image), "--out",
            str(d / "p"), *_sets(i.data)]


def _replicate(i: Inputs, d: Path) -> list[str]:
    return ["replicate-decoder", "--detr", str(i.detr), "--out", str(d / "init.pth"), "--num-predicates",
            str(i.num_predicates), "--overrides", json.dumps(TINY)]


def _prepare(i: Inputs, d: Path) -> list[str]:
    return ["data", "prepare", "--root", str(i.data), "--out", str(d / "p" / "summary.json"), "--num-val", "6"]


FULL = "the disk is full"
READ_ONLY = "is not writable (read-only file system)"
CASES = {
    # The training curves (dvclive) fill the disk: no empty metrics.json, no torn curve row.
    "train-full-while-logging": Case(_train("train"), ("run/model_final.pth",), "run", FULL),
    "pretrain-detr-full-while-logging": Case(_train("pretrain-detr"), ("run/model_final.pth",), "run", FULL),
    # 8 MB checkpoints on a 1 MB disk
    "train-full-at-the-checkpoint": Case(_train("train"), ("run/model_final.pth",), "run/checkpoints", FULL,
                                         size="1m"),
    "evaluate-full": Case(_evaluate, ("ev/predictions.h5", "ev/metrics.json"), "ev/predictions.h5",
                          f"{FULL} ("),
    "evaluate-full-inside-hdf5": Case(_evaluate, ("ev/predictions.h5", "ev/metrics.json"), "ev/predictions.h5",
                                      FULL, size="16k", python=("-c", WITHOUT_SPACE_CHECK)),
    "metrics-full": Case(_metrics, ("m",), "m/metrics.json", FULL, leave=0),
    "report-full": Case(_report, ("r",), "r/report.html", FULL, leave=0),
    "predict-full": Case(_predict, ("p",), "p", FULL, leave=0),
    "replicate-decoder-full": Case(_replicate, ("init.pth",), "init.pth", f"{FULL} (", size="1m"),
    "prepare-full": Case(_prepare, ("p",), "p/summary.json", FULL, leave=0),
    "train-read-only": Case(_train("train"), ("run/model_final.pth", "run/log.jsonl"), "run", READ_ONLY,
                            read_only=True, existing={"run/notes.txt": "an earlier run\n"}),
    "pretrain-detr-read-only": Case(_train("pretrain-detr"), ("run",), "run", READ_ONLY, read_only=True),
    "evaluate-read-only": Case(_evaluate, ("ev/predictions.h5",), "ev", READ_ONLY, read_only=True,
                               existing={"ev/metrics.json": "{}\n"}),
    "metrics-read-only": Case(_metrics, ("m",), "m/metrics.json", READ_ONLY, read_only=True),
    "report-read-only": Case(_report, ("r/report.html",), "r/report.html", READ_ONLY, read_only=True,
                             existing={"r/old.html": "<p>old</p>\n"}),
    "predict-read-only": Case(_predict, ("p",), "p", READ_ONLY, read_only=True),
    "replicate-decoder-read-only": Case(_replicate, ("init.pth",), "init.pth", READ_ONLY, read_only=True),
    "prepare-read-only": Case(_prepare, ("p",), "p/summary.json", READ_ONLY, read_only=True),
}


def leftovers(disk: Path, existing: dict[str, str]) -> list[str]:
    """Temporary files, empty files and torn text lines on ``disk`` (the filler and old files aside)."""
    found = []
    for path in disk.rglob("*"):
        name = str(path.relative_to(disk))
        if not path.is_file() or name == "filler" or name in existing:
            continue
        if path.name.startswith(".") or ".tmp" in path.name:
            found.append(f"{name}: a temporary file")
        elif path.stat().st_size == 0:
            found.append(f"{name}: empty")
        elif path.suffix in (".tsv", ".jsonl", ".json", ".yaml") and not path.read_text().endswith("\n"):
            found.append(f"{name}: its last line is torn")
    return found


@pytest.mark.parametrize("name", CASES)
def test_bad_output_location_is_one_line_and_leaves_nothing(name, inputs, tmp_path):
    case = CASES[name]
    with tmpfs(tmp_path / "disk", case.size) as disk:
        for relative, text in case.existing.items():
            (disk / relative).parent.mkdir(parents=True, exist_ok=True)
            (disk / relative).write_text(text)
        if case.read_only:
            remount_read_only(disk)
        elif case.leave is not None:
            fill(disk, case.leave)
        result = _run([sys.executable, *case.python, *case.argv(inputs, disk)])
        lines = result.stderr.splitlines()
        assert result.returncode == 2, f"exit status {result.returncode}:\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
        assert len(lines) == 1 and lines[0].startswith("itersg: error: "), result.stderr[-3000:]
        assert f"{disk / case.named}" in lines[0] and case.says in lines[0], lines[0]
        assert [f for f in case.finals if (disk / f).exists()] == []
        assert {r: (disk / r).read_text() for r in case.existing} == case.existing
        assert leftovers(disk, case.existing) == []


def test_a_training_stopped_by_a_full_disk_resumes_from_its_checkpoint(inputs, tmp_path):
    """The error says from which iteration a rerun resumes, and once there is space, it does."""
    train = [sys.executable, "-m", "itersg", "train", "--variant", "r101-detr"]
    with tmpfs(tmp_path / "disk", "20m") as disk:
        argv = [*train, "--out", str(disk / "run"), *_sets(inputs.data, "train.iterations=4")]
        first = _run([*argv, "--stop-at", "2"])
        assert first.returncode == 75, first.stderr[-3000:]
        fill(disk)
        full = _run(argv)
        assert full.returncode == 2 and len(full.stderr.splitlines()) == 1, full.stderr[-3000:]
        assert full.stderr.startswith(f"itersg: error: {disk / 'run'}") and FULL in full.stderr
        assert f"rerun the same command: it resumes from iteration 2 ({disk / 'run/checkpoints'}" in full.stderr
        assert leftovers(disk, {}) == []
        (disk / "filler").unlink()
        again = _run([*argv, "--stop-at", "3"])
        assert again.returncode == 75, again.stderr[-3000:]
        assert f"resuming from {disk / 'run/checkpoints/model_0000002.pth'} (iteration 2)" in again.stdout


def test_a_folder_without_write_permission_is_one_line(inputs):
    """EACCES as well as EROFS: an unprivileged user writing into a folder of root's."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs `setpriv` to run the command as an unprivileged user")
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:  # pytest's own folders are private to root
        scratch = Path(scratch)
        shutil.copytree(inputs.data, scratch / "vg")
        (scratch / "locked").mkdir()
        for path in (scratch, *scratch.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        command = [sys.executable, "-m", "itersg", "data", "prepare", "--root", str(scratch / "vg"),
                   "--out", str(scratch / "locked" / "sub" / "summary.json"), "--num-val", "6"]
        if os.geteuid() == 0:
            unprivileged = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            probe = _run([*unprivileged, sys.executable, "-c", "import itersg"], cwd=scratch)
            if probe.returncode != 0:  # e.g. a checkout inside a folder of mode 700 (`mktemp -d`)
                pytest.skip("an unprivileged user cannot import itersg from this checkout: "
                            f"{(probe.stderr.strip().splitlines() or ['?'])[-1]}")
            command = [*unprivileged, *command]
        else:
            (scratch / "locked").chmod(0o555)
        result = _run(command, cwd=scratch, env={**os.environ, "HOME": str(scratch)})
        if result.returncode in (126, 127):
            pytest.skip(f"cannot run Python as an unprivileged user here ({result.stderr.strip()})")
        (scratch / "locked").chmod(0o755)
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr == (f"itersg: error: {scratch / 'locked/sub/summary.json'}: cannot write there: "
                                 f"{scratch / 'locked'} is not writable (permission denied); choose another "
                                 "output folder or make it writable, then run again\n")
        assert list((scratch / "locked").iterdir()) == []
