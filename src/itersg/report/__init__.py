"""The HTML report: the study's metrics beside the published etri-iterativeSG table.

Reads files only (metrics JSON, params, prepare summary, dvclive logs, Snakemake benchmarks) and imports
no model code. ``write_report(ReportRequest(...))`` is the entry point; ``itersg report`` calls it.
"""

from itersg.report.render import ReportRequest, write_report

__all__ = ["ReportRequest", "write_report"]
