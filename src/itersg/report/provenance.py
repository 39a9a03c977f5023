"""Where the report's numbers come from: code version, params, data checksums, software, hardware, times."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from itersg.report.inputs import BenchmarkRecord, MetricsFile

SOFTWARE = ("torch", "torchvision", "timm", "numpy", "snakemake", "dvc", "dvclive", "matplotlib", "jinja2",
            "itersg")
# timing keys shown as columns of the hardware table when a metrics file has them
TIMING_KEYS = ("device", "batch_size", "images_timed", "warmup_batches")


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None
    note: str = ""


def git_state(cwd: Path | None = None) -> GitState:
    """Commit and dirty flag of the git work tree at ``cwd``; a note instead when there is none."""
    try:
        commit = _git(["rev-parse", "HEAD"], cwd)
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    except FileNotFoundError:
        return GitState(None, None, "git is not installed")
    except subprocess.CalledProcessError:
        return GitState(None, None, f"{Path(cwd or '.').resolve()} is not a git work tree (or has no commit)")
    return GitState(commit, bool(status))


def _git(args: list[str], cwd: Path | None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions(packages: Iterable[str] = SOFTWARE) -> list[tuple[str, str]]:
    """Python and the installed versions of the packages (read from metadata: nothing is imported)."""
    versions = [("python", platform.python_version())]
    for name in packages:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, "not installed"))
    return versions


def generated_at() -> str:
    """UTC time of this report; ``SOURCE_DATE_EPOCH`` fixes it for byte-identical rebuilds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%d %H:%M:%S UTC")


def file_date(path: Path) -> str:
    return dt.datetime.fromtimestamp(Path(path).stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class EvaluationRecord:
    """Hardware and date of one metrics file."""

    variant: str
    iteration: int
    status: str
    path: str
    date: str
    timing: dict[str, Any] = field(default_factory=dict)
    gpu: str = ""


def _gpu_text(timing: dict[str, Any]) -> str:
    """GPU model and count when the evaluation recorded them (timing keys naming a GPU), e.g. "A100 × 4"."""
    fields = {key.lower(): value for key, value in timing.items() if "gpu" in key.lower()}
    model = next((str(v) for k, v in fields.items() if "model" in k or "name" in k), "")
    count = next((v for k, v in fields.items() if "count" in k or k.startswith("num")), None)
    if model or count is not None:
        return f"{model or 'GPU'} × {count}" if count is not None else model
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def display_path(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter, and machine-independent)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def evaluation_records(files: Sequence[MetricsFile]) -> list[EvaluationRecord]:
    """One record per metrics file, in the given order."""
    records = []
    for m in files:
        timing = m.data.get("timing", {}) if m.status == "ok" else {}
        date = str(m.data.get("date") or m.data.get("created") or f"{file_date(m.path)} (file time)")
        records.append(EvaluationRecord(m.variant, m.iteration, m.status, display_path(m.path), date,
                                        {k: timing.get(k, "—") for k in TIMING_KEYS}, _gpu_text(timing)))
    return records


@dataclass(frozen=True)
class StageTime:
    rule: str
    jobs: int
    seconds: float
    max_rss_mb: float | None


def hms(seconds: float) -> str:
    """``3725.4`` -> ``1:02:05`` (as Snakemake's h:m:s column)."""
    return str(dt.timedelta(seconds=round(seconds)))


def stage_times(records: Sequence[BenchmarkRecord]) -> list[StageTime]:
    """Wall time summed per rule (each job's mean over repeats), and the largest max RSS."""
    by_rule: dict[str, list[BenchmarkRecord]] = {}
    for record in records:
        by_rule.setdefault(record.rule, []).append(record)
    times = []
    for rule, group in by_rule.items():
        rss = [r.max_rss_mb for r in group if r.max_rss_mb is not None]
        times.append(StageTime(rule, len(group), sum(r.seconds for r in group), max(rss) if rss else None))
    return times


@dataclass(frozen=True)
class ParamsInfo:
    """The params file the study ran with: its bytes' sha256, its text and the resolved values."""

    path: Path
    sha256: str
    text: str
    overrides: list[str]
    resolved: dict[str, Any]

    @property
    def transformer_level(self) -> str | None:
        """The FPN level of every VoVNet variant, or None: each variant's own (``itersg.catalog``)."""
        return self.resolved["model"]["transformer_level"]


def read_params(path: Path, overrides: Sequence[str] = ()) -> ParamsInfo:
    """Load and validate ``path`` (with ``--set`` overrides) through the project's config loader."""
    from itersg.config import load_params

    resolved = load_params(path, overrides)
    return ParamsInfo(Path(path), sha256_file(path), Path(path).read_text(), list(overrides), resolved)
