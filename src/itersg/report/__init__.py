"""The HTML report: the study's metrics beside the published etri-iterativeSG table.

Reads files only (metrics JSON, params, prepare summary, dvclive logs, Snakemake benchmarks, and for the
gallery the predictions files and the dataset) and builds no model. ``write_report(ReportRequest(...))`` is
the entry point; ``itersg report`` calls it.

May import: itersg.errors, itersg.files, itersg.config, itersg.catalog, itersg.data, itersg.evaluation,
itersg.visualize.
"""

from itersg.report.render import ReportRequest, write_report

__all__ = ["ReportRequest", "write_report"]
