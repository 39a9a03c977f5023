"""The report's tables: our metrics beside the published etri-iterativeSG numbers, with differences.

Units: the metrics JSON holds recalls as fractions and AP in percent; the published CSV holds recalls in
percent, SGMeanRecall as fractions and AP in percent. The table shows the CSV's units: each column's
``scale`` turns our value into them, and differences (ours − published) are taken in them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from itersg.catalog import VARIANTS
from itersg.catalog import variant_order as catalog_order
from itersg.report.inputs import KS, MetricsFile, MetricsSelection, PrepareSummary

# The lettered rows are the ETRI study (A = IterativeSG_UBC, the R-101 DETR run); other rows are context.
# Each variant's published row (its ``ref``) and label come from the catalogue (``itersg.catalog``).
STUDY_REFS = ("A", "B", "C", "D", "E", "F", "G")
EMPTY = "—"
# Differences smaller than this (in displayed units) count as equal: below the table's 2-decimal rounding.
SAME_TOLERANCE = 0.005


@dataclass(frozen=True)
class Column:
    """One metric column; ``scale`` turns our JSON value into the displayed unit (the CSV's unit)."""

    key: str
    label: str
    group: str
    section: str
    csv_key: str | None
    scale: float = 1.0
    digits: int = 2
    higher_is_better: bool = True

    def ours(self, metrics: MetricsFile) -> Any:
        """Our raw value (JSON units) or None (``timing`` and ``params`` are optional blocks)."""
        block = metrics.data.get(self.section, {})
        return block.get(self.key.removeprefix("params.") if self.section == "params" else self.key)


def _recall_columns() -> list[Column]:
    names = {"R": "R", "ngR": "ng-R", "zR": "zR", "mR": "mR", "mR_corrected": "mR corr.", "hR": "hR"}
    columns = []
    for metric, label in names.items():
        csv_key = None if metric == "mR_corrected" else metric
        for k in KS:
            columns.append(Column(f"{metric}@{k}", f"@{k}", label, "sgdet",
                                  csv_key and f"{csv_key}@{k}", scale=100.0))
    return columns


def _other_columns() -> list[Column]:
    columns = [Column(m, m, "Detection AP (%)", "bbox", m) for m in
               ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    columns += [Column(f"SGMeanRecall@{k}", f"@{k}", "SGMeanRecall (fraction)", "sgdet",
                       f"SGMeanRecall@{k}", digits=4) for k in KS]
    columns.append(Column("s_per_image", "s/img", "Speed", "timing", "inference_s_per_img", digits=4,
                          higher_is_better=False))
    columns.append(Column("params.backbone", "backbone", "Parameters", "params", "backbone_params", digits=0))
    columns.append(Column("params.total", "total", "Parameters", "params", "total_params", digits=0))
    return columns


RECALL_COLUMNS = _recall_columns()
OTHER_COLUMNS = _other_columns()


# ------------------------------------------------------------------------------------- reference CSV


def reference_rows() -> list[dict[str, str]]:
    """Every row of the packaged reference_results.csv (the etri-iterativeSG table and other methods' rows;
    see its PROVENANCE note)."""
    text = files("itersg.report").joinpath("reference_results.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


def published_row(variant: str, iteration: int,
                  rows: Sequence[Mapping[str, str]]) -> Mapping[str, str] | None:
    """The variant's published row (the catalogue's ``published`` ref) at this iteration, if any."""
    ref = _published_ref(variant)
    return next((row for row in rows if ref and row["ref"] == ref and row["iterations"] == str(iteration)), None)


def published_total_params(variant: str, rows: Sequence[Mapping[str, str]]) -> tuple[int | None, str]:
    """The T.P. count and the B.P. text of the variant's published row (same for every iteration)."""
    ref = _published_ref(variant)
    row = next((row for row in rows if ref and row["ref"] == ref), None)
    if row is None:
        return None, ""
    return (int(row["total_params"]) if row["total_params"] else None), row["backbone_params"]


def _published_ref(variant: str) -> str | None:
    return VARIANTS[variant].published if variant in VARIANTS else None


def _csv_float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- cells


def format_value(value: float | None, column: Column) -> str:
    """Displayed text of a value already in display units."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    if column.section == "params":
        return f"{value / 1e6:.2f} M"
    return f"{value:.{column.digits}f}"


def format_difference(delta: float | None, column: Column) -> str:
    if delta is None:
        return EMPTY
    if column.section == "params":
        return f"{int(delta):+,}".replace("-", "−") if delta else "0"
    text = f"{delta:+.{column.digits}f}"
    return text.replace("-", "−")


def difference_class(delta: float | None, column: Column) -> str:
    """css class of a difference: ``better``/``worse`` in the metric's good direction, ``same`` if ~0."""
    if delta is None:
        return "na"
    if column.section == "params":
        return "same" if delta == 0 else "worse"  # any other count is a mismatch, in either direction
    if abs(delta) < SAME_TOLERANCE * 10 ** (2 - column.digits):
        return "same"
    return "better" if (delta > 0) == column.higher_is_better else "worse"


@dataclass(frozen=True)
class Cell:
    """One table cell; ``value`` is the raw number (ours: JSON units, published: CSV units, diff: display)."""

    text: str
    value: float | int | None
    css: str = ""
    title: str = ""


def ours_cell(metrics: MetricsFile, column: Column) -> Cell:
    raw = column.ours(metrics)
    if isinstance(raw, float) and math.isnan(raw):
        raw = None  # e.g. zR without zero-shot test triplets, written as NaN
    shown = None if raw is None else raw * column.scale
    return Cell(format_value(shown, column), raw, "ours")


def published_cell(row: Mapping[str, str] | None, column: Column) -> Cell:
    if row is None or column.csv_key is None:
        return Cell(EMPTY, None, "published na")
    if column.key == "params.backbone":
        text = row["backbone_params"] or EMPTY
        return Cell(f"{text} †" if row["backbone_params"] else text, None, "published",
                    "published B.P. (not the backbone that runs here)")
    raw = _csv_float(row[column.csv_key])
    return Cell(format_value(raw, column), raw, "published" if raw is not None else "published na")


def difference_cell(ours: Cell, published: Cell, column: Column) -> Cell:
    if ours.value is None or published.value is None:
        return Cell(EMPTY, None, "diff na")
    delta = ours.value * column.scale - published.value
    if column.section != "params":
        delta = round(delta, 10)
    return Cell(format_difference(delta, column), delta, f"diff {difference_class(delta, column)}")


# -------------------------------------------------------------------------------------------- rows


@dataclass
class ResultRow:
    """One (variant, checkpoint) of the study, with its published row (if any) and the differences."""

    variant: str
    iteration: int
    status: str  # "ok" | "failed" | "not run"
    metrics: MetricsFile | None
    reference: Mapping[str, str] | None
    in_study: bool
    ours: dict[str, Cell] = field(default_factory=dict)
    published: dict[str, Cell] = field(default_factory=dict)
    diff: dict[str, Cell] = field(default_factory=dict)

    @property
    def reference_label(self) -> str:
        if self.reference is None:
            return "no published row"
        return f"row {self.reference['ref']} · {self.reference['project']}"

    @property
    def reference_note(self) -> str:
        """The published row's ``note`` (how its numbers compare with ours), "" if it has none."""
        return (self.reference or {}).get("note") or ""

    @property
    def error(self) -> str:
        return self.metrics.error if self.metrics else ""

    def has_differences(self, columns: Iterable[Column]) -> bool:
        """True when at least one of ``columns`` has both our and a published value."""
        return any(self.diff[c.key].value is not None for c in columns if c.key in self.diff)


def variant_order(variants: Iterable[str]) -> list[str]:
    """Distinct variants in the catalogue's order (the published table's A-G first), unknown ones after."""
    return catalog_order(list(variants))


def study_keys(selection: MetricsSelection, variants: Sequence[str] | None,
               iterations: Sequence[int] | Mapping[str, Sequence[int]] | None) -> list[tuple[str, int, bool]]:
    """(variant, iteration, in_study) for every row: the study's grid, then metrics outside it.

    ``iterations``: the same for every variant, or each variant's own. Without params the grid is every
    variant seen × every iteration seen, so a missing checkpoint of a variant still shows as "not run".
    """
    seen = {(m.variant, m.iteration) for m in selection.files}
    if variants is None or iterations is None:
        variants = variant_order(v for v, _ in seen)
        iterations = sorted({i for _, i in seen})
    per_variant = iterations if isinstance(iterations, Mapping) else dict.fromkeys(variants, iterations)
    grid = [(v, int(i)) for v in variants for i in sorted(per_variant[v])]
    order = variant_order(v for v, _ in seen)
    extra = sorted(seen - set(grid), key=lambda key: (order.index(key[0]), key[1]))
    return [(v, i, True) for v, i in grid] + [(v, i, False) for v, i in extra]


def build_rows(selection: MetricsSelection, variants: Sequence[str] | None,
               iterations: Sequence[int] | Mapping[str, Sequence[int]] | None,
               reference: Sequence[Mapping[str, str]]) -> list[ResultRow]:
    """The rows of the main tables, with cells for every column."""
    by_key = {(m.variant, m.iteration): m for m in selection.files}
    rows = []
    for variant, iteration, in_study in study_keys(selection, variants, iterations):
        metrics = by_key.get((variant, iteration))
        status = metrics.status if metrics else "not run"
        row = ResultRow(variant, iteration, status, metrics, published_row(variant, iteration, reference),
                        in_study)
        for column in RECALL_COLUMNS + OTHER_COLUMNS:
            row.published[column.key] = published_cell(row.reference, column)
            if status == "ok":
                ours = row.ours[column.key] = ours_cell(metrics, column)
                row.diff[column.key] = difference_cell(ours, row.published[column.key], column)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class PublishedNote:
    """The ``note`` of a published row the tables show (e.g. a speed measured under other conditions)."""

    ref: str
    project: str
    note: str
    variants: tuple[str, ...]


def published_notes(rows: Iterable[ResultRow]) -> list[PublishedNote]:
    """One entry per published row with a note that sits beside at least one of ``rows``, in row order."""
    found: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for row in rows:
        if row.reference_note:
            key = (row.reference["ref"], row.reference["project"])
            variants = found.setdefault(key, (row.reference_note, []))[1]
            if row.variant not in variants:
                variants.append(row.variant)
    return [PublishedNote(ref, project, note, tuple(variants)) for (ref, project), (note, variants) in found.items()]


def latest_ok(rows: Iterable[ResultRow]) -> dict[str, ResultRow]:
    """Per variant, the evaluated row with the highest iteration."""
    latest: dict[str, ResultRow] = {}
    for row in rows:
        newer = row.variant not in latest or row.iteration > latest[row.variant].iteration
        if row.status == "ok" and newer:
            latest[row.variant] = row
    return latest


# ---------------------------------------------------------------------------------- parameter counts


@dataclass(frozen=True)
class ParamCheck:
    """Measured parameter counts of one variant against the published T.P. (total) column."""

    variant: str
    iteration: int | None
    backbone: int | None
    total: int | None
    published_total: int | None
    published_backbone: str
    status: str  # "match" | "mismatch" | "no published count" | "not measured" | "not run"

    @property
    def delta(self) -> int | None:
        if self.total is None or self.published_total is None:
            return None
        return self.total - self.published_total


def check_total_params(measured: int | None, published: int | None, evaluated: bool = True) -> str:
    """The T.P. verdict: exact equality is required (the spec reproduces every count to the parameter)."""
    if not evaluated:
        return "not run"
    if measured is None:
        return "not measured"
    if published is None:
        return "no published count"
    return "match" if measured == published else "mismatch"


def param_checks(rows: Sequence[ResultRow], reference: Sequence[Mapping[str, str]]) -> list[ParamCheck]:
    latest = latest_ok(rows)
    checks = []
    for variant in dict.fromkeys(row.variant for row in rows):
        published_total, published_backbone = published_total_params(variant, reference)
        row = latest.get(variant)
        counts = row.metrics.data.get("params", {}) if row else {}
        verdict = check_total_params(counts.get("total"), published_total, evaluated=row is not None)
        checks.append(ParamCheck(variant, row.iteration if row else None, counts.get("backbone"),
                                 counts.get("total"), published_total, published_backbone, verdict))
    return checks


# -------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class DeltaSummary:
    metric: str
    mean: float
    low: float
    high: float
    count: int


@dataclass(frozen=True)
class Summary:
    total: int
    ok: int
    failed: int
    not_run: int
    best: ResultRow | None
    deltas: list[DeltaSummary]
    params_match: int
    params_checked: int


def summarize(rows: Sequence[ResultRow], checks: Sequence[ParamCheck],
              metrics: Sequence[str] = ("R@50", "mR@50", "AP")) -> Summary:
    """The numbers of the report's first paragraph."""
    ok = [r for r in rows if r.status == "ok"]
    with_r50 = [r for r in ok if r.ours["R@50"].value is not None]
    best = max(with_r50, key=lambda r: r.ours["R@50"].value, default=None)
    deltas = []
    for metric in metrics:
        values = [r.diff[metric].value for r in ok if r.diff[metric].value is not None]
        if values:
            mean = sum(values) / len(values)
            deltas.append(DeltaSummary(metric, mean, min(values), max(values), len(values)))
    checked = [c for c in checks if c.status in ("match", "mismatch")]
    return Summary(len(rows), len(ok), sum(r.status == "failed" for r in rows),
                   sum(r.status == "not run" for r in rows), best, deltas,
                   sum(c.status == "match" for c in checked), len(checked))


# ------------------------------------------------------------------------------- per-predicate recall


@dataclass(frozen=True)
class PredicateOrder:
    """Predicates in plotting order, with training counts and head/body/tail groups when known."""

    names: list[str]
    frequencies: list[int | None]
    groups: list[str | None]
    note: str


def predicate_order(metric_names: Iterable[str], prepare: PrepareSummary | None) -> PredicateOrder:
    """Order by training frequency (descending) and split into thirds: head, body, tail.

    Without the prepare summary the predicates are ordered by name and have no group.
    """
    names = sorted(set(metric_names))
    if prepare is None:
        return PredicateOrder(names, [None] * len(names), [None] * len(names),
                              "no prepare summary given (--prepare): predicates ordered by name, no "
                              "head/body/tail groups")
    counts = dict(zip(prepare.predicate_names, prepare.predicate_frequencies))
    known = sorted((n for n in names if n in counts), key=lambda n: (-counts[n], n))
    unknown = [n for n in names if n not in counts]
    groups: list[str | None] = []
    for index in range(len(known)):
        third = 3 * index // max(len(known), 1)
        groups.append(("head", "body", "tail")[third])
    note = (f"ordered by training-split frequency from {prepare.path.name}; head/body/tail = thirds of the "
            f"{len(known)} predicates by frequency rank")
    if unknown:
        note += f"; not in the prepare summary, listed last: {', '.join(unknown)}"
    return PredicateOrder(known + unknown, [counts[n] for n in known] + [None] * len(unknown),
                          groups + [None] * len(unknown), note)


@dataclass(frozen=True)
class GroupRecall:
    variant: str
    iteration: int
    values: dict[str, float | None]  # "<group>@<K>" -> mean recall (fraction)


def group_recalls(latest: Mapping[str, ResultRow], order: PredicateOrder) -> list[GroupRecall]:
    """Mean per-predicate recall (corrected convention) over each frequency group, at K = 50 and 100."""
    result = []
    for variant, row in latest.items():
        per_predicate = row.metrics.data["per_predicate_recall"]
        values: dict[str, float | None] = {}
        for group in ("head", "body", "tail"):
            members = [n for n, g in zip(order.names, order.groups) if g == group]
            for k in (50, 100):
                recalls = [per_predicate[str(k)].get(n) for n in members]
                recalls = [r for r in recalls if r is not None]
                values[f"{group}@{k}"] = sum(recalls) / len(recalls) if recalls else None
        result.append(GroupRecall(variant, row.iteration, values))
    return result
