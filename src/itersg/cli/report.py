"""``itersg report``: the study's metrics beside the published table, as one self-contained HTML file."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

REPORT_GENERATOR = "itersg report"  # the page's <meta name="generator">: marks it as written by this verb


def register(subparsers: argparse._SubParsersAction) -> None:
    from itersg.cli._params import add_force_argument, add_params_arguments

    parser = subparsers.add_parser(
        "report",
        help="render the HTML report (tables vs the published numbers, figures, provenance)",
        description="Render every metrics file beside the published etri-iterativeSG numbers into ONE "
                    "self-contained HTML file (figures embedded, no external resources).",
    )
    parser.add_argument("--metrics", nargs="+", required=True, metavar="FILE_OR_GLOB",
                        help="metrics JSON files written by `itersg evaluate` (quoted globs allowed)")
    parser.add_argument("--out", type=Path, default=Path("reports/report.html"),
                        help="HTML file to write (default: %(default)s)")
    add_params_arguments(parser, default=None,
                         help="params.yaml of the study: its variants × eval_iterations are the table's rows "
                              "(missing ones show 'not run'), its hash goes into the provenance")
    parser.add_argument("--curves", nargs="*", default=[], metavar="[NAME=]DIR",
                        help="dvclive folders, one per variant (NAME defaults to the parent folder's name)")
    parser.add_argument("--benchmarks", type=Path, default=None, metavar="DIR",
                        help="Snakemake benchmark folder (benchmarks/<rule>/<wildcards>.tsv)")
    parser.add_argument("--prepare", type=Path, default=None, metavar="FILE",
                        help="prepare-stage JSON with predicate_names, predicate_frequencies (and sha256)")
    parser.add_argument("--title", default=None, help="page title")
    add_force_argument(parser)
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from itersg.files import check_output_file
    from itersg.report.render import DEFAULT_TITLE, ReportRequest, write_report

    check_output_file(args.out, marks={REPORT_GENERATOR}, what="a report written by `itersg report`",
                      inputs=_inputs(args), force=args.force)
    request = ReportRequest(
        metrics=args.metrics, out=args.out, params=args.params, overrides=args.assignments,
        curves=args.curves, benchmarks=args.benchmarks, prepare=args.prepare,
        title=args.title or DEFAULT_TITLE,
    )
    path = write_report(request)
    print(f"itersg report: wrote {path}")
    return 0


def _inputs(args: argparse.Namespace) -> dict[str, list[Path]]:
    """What the report reads: the metrics files (globs expanded), the predictions files beside them (the
    gallery) and the files and folders of the other options."""
    from itersg.report.gallery import PREDICTIONS_FILE
    from itersg.report.inputs import parse_curve_spec

    metrics = [Path(name) for pattern in args.metrics for name in
               (sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern])]  # noqa: PTH207
    return {"--metrics": metrics, "--params": [args.params], "--prepare": [args.prepare],
            "--curves": [parse_curve_spec(spec)[1] for spec in args.curves], "--benchmarks": [args.benchmarks],
            "gallery": [path.parent / PREDICTIONS_FILE for path in metrics]}
