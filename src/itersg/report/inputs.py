"""Read and check the files the report is built from: metrics JSON, prepare JSON, dvclive curves, benchmarks.

Every reader raises UserError naming the file (and the field) when an input is malformed, so a bad file
gives one clear line instead of a traceback halfway through rendering.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itersg.data.vg150 import SPLITS
from itersg.errors import UserError

KS = (20, 50, 100)
# sgdet keys of the metrics JSON (contract), each at K in KS; all fractions in [0, 1].
SGDET_METRICS = ("R", "ngR", "zR", "mR", "mR_corrected", "hR", "hR_corrected", "SGMeanRecall")
BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCO box AP in percent
PARAM_COUNTS = ("backbone", "total")
STATUSES = ("ok", "failed")
# The values a kind of number may take, and how a refusal describes them (infinity is never one).
NUMBER_KINDS = {
    "fraction": (lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1] (percent given?)"),
    "percent": (lambda v: 0.0 <= v <= 100.0, "a percentage in [0, 100] (an undefined AP is null, not -1)"),
    "seconds": (lambda v: 0.0 < v < math.inf, "a positive, finite number of seconds"),
}


@dataclass(frozen=True)
class MetricsFile:
    """One evaluation (variant, checkpoint) as written by ``itersg evaluate``."""

    path: Path
    variant: str
    iteration: int
    status: str
    data: Mapping[str, Any]

    @property
    def error(self) -> str:
        return str(self.data.get("error", ""))


@dataclass(frozen=True)
class MetricsSelection:
    """The metrics files found for the ``--metrics`` arguments, and the patterns that matched nothing."""

    files: list[MetricsFile]
    empty_patterns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PrepareSummary:
    """What the report uses of the prepare stage's JSON."""

    path: Path
    predicate_names: list[str]
    predicate_frequencies: list[int]
    sha256: dict[str, str]


@dataclass(frozen=True)
class Curve:
    """One dvclive metric of one variant: ``name`` is the TSV path below plots/metrics without .tsv."""

    variant: str
    name: str
    steps: list[float]
    values: list[float]


@dataclass(frozen=True)
class CurveDir:
    """One ``--curves`` directory: its metric TSVs and the flattened last values of its metrics.json."""

    variant: str
    path: Path
    curves: list[Curve]
    summary: dict[str, Any]


@dataclass(frozen=True)
class BenchmarkRecord:
    """One Snakemake benchmark file: benchmarks/<rule>/<wildcards>.tsv (mean over repeated rows)."""

    path: Path
    rule: str
    wildcards: str
    seconds: float
    max_rss_mb: float | None
    cpu_time_s: float | None


# ---------------------------------------------------------------------------------------------- JSON


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file or raise UserError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a valid JSON {what} file ({err}); regenerate it") from None


def _require(mapping: Mapping[str, Any], key: str, path: Path, where: str = "") -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise UserError(f"{path}: missing field '{where}{key}'; the file does not follow the metrics format")
    return mapping[key]


def _check_number(value: Any, path: Path, name: str, kind: str) -> None:
    """A number of ``NUMBER_KINDS[kind]``, or undefined (null / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return  # e.g. zR when no test image has a zero-shot triplet: shown as "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{path}: field '{name}' must be a number, got {value!r}")
    possible, description = NUMBER_KINDS[kind]
    if not possible(value):
        raise UserError(f"{path}: field '{name}' = {value} is not {description}; the file was edited or not "
                        "written by itersg: evaluate the checkpoint again (itersg evaluate)")


def _check_ok_metrics(data: Mapping[str, Any], path: Path) -> None:
    sgdet = _require(data, "sgdet", path)
    for metric in SGDET_METRICS:
        for k in KS:
            _check_number(_require(sgdet, f"{metric}@{k}", path, "sgdet."), path, f"sgdet.{metric}@{k}",
                          "fraction")
    bbox = _require(data, "bbox", path)
    for metric in BBOX_METRICS:
        _check_number(_require(bbox, metric, path, "bbox."), path, f"bbox.{metric}", "percent")
    # `itersg metrics` (scoring a predictions file) has no model to time or count: both blocks are optional
    if "timing" in data:
        timing = data["timing"]
        _check_number(_require(timing, "s_per_image", path, "timing."), path, "timing.s_per_image", "seconds")
    if "params" in data:
        for name in PARAM_COUNTS:
            count = _require(data["params"], name, path, "params.")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise UserError(f"{path}: field 'params.{name}' must be an integer count (0 or more), got {count!r}")
    per_predicate = _require(data, "per_predicate_recall", path)
    for k in KS:
        recalls = _require(per_predicate, str(k), path, "per_predicate_recall.")
        if not isinstance(recalls, Mapping):
            raise UserError(f"{path}: field 'per_predicate_recall.{k}' must map predicate names to recalls")
        for name, value in recalls.items():
            _check_number(value, path, f"per_predicate_recall.{k}.{name}", "fraction")
    split = _require(data, "split", path)
    if split not in SPLITS:
        raise UserError(f"{path}: field 'split' must be one of {list(SPLITS)}, got {split!r}")


def parse_metrics(data: Any, path: Path) -> MetricsFile:
    """Check one metrics JSON document against the contract and wrap it."""
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected a JSON object with the metrics fields, got {type(data).__name__}")
    variant = _require(data, "variant", path)
    iteration = _require(data, "iteration", path)
    status = _require(data, "status", path)
    if not isinstance(variant, str) or not variant:
        raise UserError(f"{path}: field 'variant' must be a non-empty string, got {variant!r}")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise UserError(f"{path}: field 'iteration' must be an integer (0 or more), got {iteration!r}")
    if status not in STATUSES:
        raise UserError(f"{path}: field 'status' must be one of {list(STATUSES)}, got {status!r}")
    if status == "ok":
        _check_ok_metrics(data, path)
    return MetricsFile(Path(path), variant, iteration, status, data)


def _expand(pattern: str) -> list[str]:
    if glob.has_magic(pattern):
        return sorted(glob.glob(pattern, recursive=True))  # noqa: PTH207 (absolute or relative patterns)
    if not Path(pattern).is_file():
        raise UserError(f"{pattern}: no such metrics file; check --metrics (globs such as 'results/*/eval/**/"
                        "metrics.json' are allowed)")
    return [pattern]


def load_metrics(patterns: Iterable[str]) -> MetricsSelection:
    """Read every metrics file named or matched by ``patterns``; one file per (variant, iteration)."""
    files: dict[tuple[str, int], MetricsFile] = {}
    empty = []
    for pattern in patterns:
        paths = _expand(pattern)
        if not paths:
            empty.append(pattern)
        for name in paths:
            path = Path(name)
            metrics = parse_metrics(read_json(path, "metrics"), path)
            key = (metrics.variant, metrics.iteration)
            if key in files and files[key].path.resolve() != path.resolve():
                raise UserError(f"{path}: {metrics.variant} at iteration {metrics.iteration} is also in "
                                f"{files[key].path}; pass only one metrics file per checkpoint")
            files[key] = metrics
    if empty and not files:
        raise UserError(f"--metrics {' '.join(empty)}: matched no metrics file; check the pattern (quote it so "
                        "that itersg, not the shell, expands it) or run the evaluations first")
    check_same_data(list(files.values()))
    return MetricsSelection(list(files.values()), empty)


def _scored_on(metrics: MetricsFile) -> dict[str, Any]:
    """What a successful evaluation records of the data it was scored on (None: not recorded)."""
    images = metrics.data.get("images")
    return {"split": metrics.data["split"],
            "images.expected": images.get("expected") if isinstance(images, Mapping) else None,
            "per_predicate_recall": sorted(metrics.data["per_predicate_recall"]["50"])}


def check_same_data(files: list[MetricsFile]) -> None:
    """Refuse successful evaluations of different splits or datasets: one table cannot compare them.

    A metrics file records its split, the number of images of the split (``images.expected``) and, as the
    keys of ``per_predicate_recall``, the dataset's predicate names; all must agree with the first file's.
    """
    scored = [(metrics, _scored_on(metrics)) for metrics in files if metrics.status == "ok"]
    if not scored:
        return
    first, expected = scored[0]
    for metrics, values in scored[1:]:
        for name, value in values.items():
            other = expected[name]
            if value is None or other is None or value == other:
                continue
            differs = (f"names other predicates than {first.path} (e.g. {sorted(set(value) ^ set(other))[:3]})"
                       if name == "per_predicate_recall" else f"is {value!r} but {other!r} in {first.path}")
            raise UserError(f"{metrics.path}: field '{name}' {differs}: the two were scored on different "
                            f"{'splits' if name == 'split' else 'data'}, which one table cannot compare; "
                            "evaluate every checkpoint with the same data.root and evaluate.split")


def load_prepare(path: Path) -> PrepareSummary:
    """Predicate names, training-split predicate counts and dataset checksums of the prepare stage."""
    data = read_json(path, "prepare summary")
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected a JSON object")
    names = _require_prepare(data, "predicate_names", path)
    freqs = _require_prepare(data, "predicate_frequencies", path)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise UserError(f"{path}: field 'predicate_names' must be a list of strings")
    if not (isinstance(freqs, list) and all(isinstance(f, int | float) and f >= 0 for f in freqs)):
        raise UserError(f"{path}: field 'predicate_frequencies' must be a list of non-negative counts")
    if len(names) != len(freqs):
        raise UserError(f"{path}: 'predicate_names' has {len(names)} entries but 'predicate_frequencies' "
                        f"has {len(freqs)}; they must align")
    sha = data.get("sha256", {})
    if not isinstance(sha, Mapping):
        raise UserError(f"{path}: field 'sha256' must map file names to checksums")
    checksums = {str(k): str(v) for k, v in sha.items()}
    return PrepareSummary(Path(path), names, [int(f) for f in freqs], checksums)


def _require_prepare(data: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise UserError(f"{path}: missing field '{key}'; pass the JSON written by `itersg data prepare`")
    return data[key]


# ------------------------------------------------------------------------------------------- curves


def parse_curve_spec(spec: str) -> tuple[str, Path]:
    """``NAME=DIR`` or ``DIR`` (the variant is then the parent folder's name: train/<variant>/dvclive)."""
    name, sep, directory = spec.partition("=")
    if sep and name and directory:
        return name, Path(directory)
    path = Path(spec)
    return path.resolve().parent.name, path


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    if not rows:
        raise UserError(f"{path}: empty file; expected a header line")
    return rows[0], [r for r in rows[1:] if r]


def _parse_float(text: str, path: Path, column: str) -> float | None:
    if text in ("", "-", "NA"):
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path}: column '{column}' has {text!r}, not a number") from None


def read_dvclive_tsv(path: Path, name: str, variant: str) -> Curve:
    """A dvclive metric file: columns [timestamp,] step, <metric basename>."""
    header, rows = _read_tsv(path)
    if "step" not in header or len(header) < 2:
        raise UserError(f"{path}: expected a dvclive metric TSV with columns 'step' and the metric name")
    step_col = header.index("step")
    value_col = next(i for i in range(len(header) - 1, -1, -1) if header[i] not in ("step", "timestamp"))
    steps, values = [], []
    for row in rows:
        step = _parse_float(row[step_col], path, "step")
        value = _parse_float(row[value_col], path, header[value_col])
        if step is not None and value is not None:
            steps.append(step)
            values.append(value)
    return Curve(variant, name, steps, values)


def load_curves(specs: Iterable[str]) -> list[CurveDir]:
    """Every dvclive metric TSV under ``<dir>/plots/metrics`` for each ``--curves`` argument."""
    result = []
    for spec in specs:
        variant, directory = parse_curve_spec(spec)
        root = directory / "plots" / "metrics"
        curves = [
            read_dvclive_tsv(tsv, tsv.relative_to(root).with_suffix("").as_posix(), variant)
            for tsv in sorted(root.rglob("*.tsv"))
        ] if root.is_dir() else []
        summary_path = directory / "metrics.json"
        summary = _flatten(read_json(summary_path, "dvclive metrics")) if summary_path.is_file() else {}
        result.append(CurveDir(variant, directory, curves, summary))
    return result


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"loss": 1}}`` -> ``{"train/loss": 1}`` (dvclive nests metric names at slashes)."""
    if not isinstance(data, Mapping):
        return {prefix or "value": data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --------------------------------------------------------------------------------------- benchmarks


def read_benchmark(path: Path, root: Path) -> BenchmarkRecord:
    """A Snakemake ``benchmark:`` TSV (header ``s h:m:s max_rss ...``), averaged over repeated rows."""
    header, rows = _read_tsv(path)
    if header[:2] != ["s", "h:m:s"] or not rows:
        raise UserError(f"{path}: not a Snakemake benchmark file (expected a header 's<TAB>h:m:s<TAB>max_rss"
                        "...' and at least one row)")

    def mean(column: str) -> float | None:
        if column not in header:
            return None
        values = [_parse_float(r[header.index(column)], path, column) for r in rows]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    relative = path.relative_to(root)
    rule = relative.parts[0] if len(relative.parts) > 1 else "(none)"
    wildcards = relative.with_suffix("").as_posix().removeprefix(f"{rule}/")
    seconds = mean("s")
    if seconds is None:
        raise UserError(f"{path}: column 's' has no value")
    return BenchmarkRecord(path, rule, wildcards, seconds, mean("max_rss"), mean("cpu_time"))


def load_benchmarks(directory: Path) -> list[BenchmarkRecord]:
    """All benchmark TSVs below ``directory`` (benchmarks/<rule>/<wildcards>.tsv), sorted by rule."""
    return [read_benchmark(tsv, directory) for tsv in sorted(Path(directory).rglob("*.tsv"))]
