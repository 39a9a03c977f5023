"""Collect everything the report shows and render it into one self-contained HTML file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import jinja2

from itersg.errors import UserError
from itersg.files import writable_file, write_text_atomic
from itersg.report import figures, gallery, inputs, provenance, tables

DEFAULT_TITLE = "itersg — IterativeSG backbone and detector study"


@dataclass(frozen=True)
class ReportRequest:
    """The inputs of ``itersg report`` (see ``itersg report --help``)."""

    metrics: Sequence[str]
    out: Path
    params: Path | None = None
    overrides: Sequence[str] = ()
    curves: Sequence[str] = ()
    benchmarks: Path | None = None
    prepare: Path | None = None
    title: str = DEFAULT_TITLE
    cwd: Path | None = None  # where to read the git state; None = the current directory


@dataclass
class Section:
    """A part of the report that may be missing: ``missing`` says why, in words."""

    missing: str = ""
    notes: list[str] = field(default_factory=list)


def column_groups(columns: Sequence[tables.Column]) -> list[tuple[str, int]]:
    """(group label, number of columns) in column order, for the two-level table header."""
    return [(group, len(list(members))) for group, members in groupby(columns, key=lambda c: c.group)]


def _study(params: provenance.ParamsInfo | None) -> tuple[list[str] | None, dict[str, list[int]] | None]:
    """The study's variants and each one's evaluated iterations (its own recipe, else the study's)."""
    if params is None:
        return None, None
    from itersg.config import variant_recipe

    variants = list(params.resolved["study"]["variants"])
    return variants, {v: [int(i) for i in variant_recipe(params.resolved, v)["eval_iterations"]] for v in variants}


def _predicates(latest: dict[str, tables.ResultRow], prepare: inputs.PrepareSummary | None) -> dict[str, Any]:
    section = Section()
    if not latest:
        section.missing = "no evaluated checkpoint: there are no per-predicate recalls to show"
        return {"section": section, "order": None, "groups": [], "images": []}
    names = {n for row in latest.values() for k in ("50", "100")
             for n in row.metrics.data["per_predicate_recall"][k]}
    order = tables.predicate_order(names, prepare)
    section.notes.append(order.note)
    images = [figures.predicate_recall_figure(row, order) for row in latest.values()]
    groups = tables.group_recalls(latest, order) if prepare is not None else []
    return {"section": section, "order": order, "groups": groups, "images": images}


def _curves(specs: Sequence[str]) -> dict[str, Any]:
    section = Section()
    if not specs:
        section.missing = "no training logs given (--curves DIR or NAME=DIR, the dvclive folders)"
        return {"section": section, "image": None, "dirs": [], "panels": {}}
    dirs = inputs.load_curves(specs)
    for d in dirs:
        if not d.curves:
            section.notes.append(f"{d.variant}: no dvclive metric files under {d.path}/plots/metrics")
    panels = figures.curve_panels(dirs)
    if not panels:
        section.missing = ("none of the curve directories has a loss, lr, R@50 or mR@50 metric "
                           "(dvclive plots/metrics/**/*.tsv)")
        return {"section": section, "image": None, "dirs": dirs, "panels": {}}
    for title, _, _ in figures.CURVE_PANELS:
        if title not in panels:
            section.notes.append(f"no {title} curve in any of the given directories")
    return {"section": section, "image": figures.curves_figure(panels), "dirs": dirs, "panels": panels}


def _speed(latest: dict[str, tables.ResultRow], reference: list[dict[str, str]]) -> dict[str, Any]:
    points = figures.speed_points(latest, reference)
    section = Section()
    if not any(not p.published for p in points):
        section.missing = "no evaluated checkpoint with both R@50 and seconds per image"
    return {"section": section, "image": figures.speed_figure(points) if points else None}


def _benchmarks(directory: Path | None) -> dict[str, Any]:
    section = Section()
    if directory is None:
        section.missing = "no Snakemake benchmark folder given (--benchmarks DIR)"
        return {"section": section, "records": [], "stages": []}
    if not Path(directory).is_dir():
        section.missing = f"the benchmark folder {directory} does not exist (no stage has run yet?)"
        return {"section": section, "records": [], "stages": []}
    records = inputs.load_benchmarks(Path(directory))
    if not records:
        section.missing = f"no benchmark TSV files under {directory}"
    return {"section": section, "records": records, "stages": provenance.stage_times(records)}


def _gallery(latest: dict[str, tables.ResultRow], params: provenance.ParamsInfo | None,
             prepare: inputs.PrepareSummary | None) -> gallery.Gallery:
    """The gallery, or why it is missing (an unreadable dataset or predictions file does not stop the report)."""
    try:
        return gallery.build_gallery(latest, params.resolved if params else None, prepare)
    except UserError as err:
        return gallery.Gallery(missing=str(err))


def build_context(request: ReportRequest) -> dict[str, Any]:
    """Every value the template shows, read and checked from the request's files."""
    selection = inputs.load_metrics(request.metrics)
    params = provenance.read_params(request.params, request.overrides) if request.params else None
    prepare = inputs.load_prepare(request.prepare) if request.prepare else None
    reference = tables.reference_rows()
    variants, iterations = _study(params)
    rows = tables.build_rows(selection, variants, iterations, reference)
    checks = tables.param_checks(rows, reference)
    latest = tables.latest_ok(rows)
    return {
        "title": request.title,
        "generated_at": provenance.generated_at(),
        "summary": tables.summarize(rows, checks),
        "rows": rows,
        "recall_columns": tables.RECALL_COLUMNS,
        "recall_groups": column_groups(tables.RECALL_COLUMNS),
        "other_columns": tables.OTHER_COLUMNS,
        "other_groups": column_groups(tables.OTHER_COLUMNS),
        "param_checks": checks,
        "published_notes": tables.published_notes(rows),
        "empty_patterns": selection.empty_patterns,
        "study_from_params": params is not None,
        "predicates": _predicates(latest, prepare),
        "curves": _curves(request.curves),
        "speed": _speed(latest, reference),
        "gallery": _gallery(latest, params, prepare),
        "gallery_top": gallery.TOP,
        "gallery_k": gallery.RECALL_K,
        "benchmarks": _benchmarks(request.benchmarks),
        "params": params,
        "prepare": prepare,
        "git": provenance.git_state(request.cwd),
        "software": provenance.software_versions(),
        "evaluations": provenance.evaluation_records([row.metrics for row in rows if row.metrics]),
        "reference": reference,
        "hms": provenance.hms,
    }


def render_html(context: dict[str, Any]) -> str:
    """Fill the package's Jinja2 template (autoescaped, strict about undefined names)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("itersg.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(**context)


def write_report(request: ReportRequest) -> Path:
    """Read the inputs, render the HTML and write it atomically to ``request.out``."""
    writable_file(request.out)
    html = render_html(build_context(request))
    return write_text_atomic(request.out, html)
