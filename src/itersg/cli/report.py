"""``itersg report``: the study's metrics beside the published table, as one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--params", type=Path, default=None,
                        help="params.yaml of the study: its variants × eval_iterations are the table's rows "
                             "(missing ones show 'not run'), its hash goes into the provenance")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params key, as for the other commands (repeatable)")
    parser.add_argument("--curves", nargs="*", default=[], metavar="[NAME=]DIR",
                        help="dvclive folders, one per variant (NAME defaults to the parent folder's name)")
    parser.add_argument("--benchmarks", type=Path, default=None, metavar="DIR",
                        help="Snakemake benchmark folder (benchmarks/<rule>/<wildcards>.tsv)")
    parser.add_argument("--prepare", type=Path, default=None, metavar="FILE",
                        help="prepare-stage JSON with predicate_names, predicate_frequencies (and sha256)")
    parser.add_argument("--title", default=None, help="page title")
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from itersg.report.render import DEFAULT_TITLE, ReportRequest, write_report

    request = ReportRequest(
        metrics=args.metrics, out=args.out, params=args.params, overrides=args.overrides,
        curves=args.curves, benchmarks=args.benchmarks, prepare=args.prepare,
        title=args.title or DEFAULT_TITLE,
    )
    path = write_report(request)
    print(f"itersg report: wrote {path}")
    return 0
