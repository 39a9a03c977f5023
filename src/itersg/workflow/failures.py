"""Failed-status metrics files for the evaluations a failed workflow run did not produce.

When a job fails for good (after its retries), Snakemake runs nothing that depends on it, so the
report rule would never run. The workflow's ``onerror`` handler instead writes, for every metrics file
of the study that is missing, a metrics file with ``status: failed`` and the reason (the last error
line of the failed job's log), and renders the report from those and the metrics that exist: the
failed variants are shown as failed, the others with their results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itersg.files import write_text_atomic
from itersg.workflow import paths
from itersg.workflow.dag import upstream_jobs

# Lines that say what went wrong, best first: the CLI's own one-line errors, then exceptions and
# SLURM's messages (srun's "task N: Exited with exit code" lines say only that something failed).
ERROR_MARKERS = (("itersg: error:",), ("Error", "Killed", "CANCELLED", "DUE TO TIME LIMIT", "error:"))


def failure_reason(dag: Any, metrics_file: str, root: Path) -> str:
    """Why ``metrics_file`` is missing: the failed job and its log's error, following the edges of ``dag``
    (the workflow's ``snakemake.dag.DAG``) back from the evaluation that writes it.

    The failed job is one with a missing output and an existing log; of several, the one whose log was
    written last (a log left by an earlier run of a job that did not run this time is older), and of
    those the one nearest to the evaluation.
    """
    failed = [(log, root / log) for log, outputs in upstream_jobs(dag, metrics_file)
              if not all((root / output).exists() for output in outputs)
              and (root / log).is_file()]  # not done, and started
    if not failed:
        return "not run: a job it depends on failed (see the Snakemake log)"
    log, log_path = max(failed, key=lambda job: job[1].stat().st_mtime)  # max keeps the first (nearest) of ties
    return f"{Path(log).parent.name} failed: {last_error_line(log_path)} (log: {log})"


def last_error_line(log: Path) -> str:
    """The last line of ``log`` that says what went wrong (``ERROR_MARKERS``), else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for markers in ERROR_MARKERS:
        for line in reversed(lines):
            if any(marker in line for marker in markers) and not line.startswith("srun:"):
                return line[:300]
    return lines[-1][:300] if lines else "the log is empty"


def write_failure_metrics(params: Mapping[str, Any], dag: Any, root: Path = Path()) -> list[Path]:
    """Write a failed-status metrics file for every missing evaluation of the study run by ``dag`` (the
    workflow's ``snakemake.dag.DAG``); return them (may be empty)."""
    out_dir = root / paths.failed_metrics_dir(params)
    written = []
    for variant, iteration in paths.evaluations(params):
        metrics_file = paths.metrics_file(params, variant, iteration)
        if (root / metrics_file).exists():
            continue
        record = {"variant": variant, "iteration": int(iteration), "status": "failed",
                  "error": failure_reason(dag, metrics_file, root)}
        written.append(write_text_atomic(out_dir / f"{variant}_{iteration}.json",
                                         json.dumps(record, indent=1) + "\n"))
    return written
