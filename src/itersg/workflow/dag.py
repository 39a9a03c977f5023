"""The Snakemake DAG of the workflow, read through Snakemake's Python API (never from printed text).

``workflow_jobs`` lists every job of one mode (rule, input and output files, wildcards): dvc.yaml is
derived from it. ``rerun_reasons`` says which jobs Snakemake would run now and why, and
``changed_jobs`` which jobs are out of date by themselves (their params, input files or outputs), as
``dvc status`` reports stages: that is how Snakemake's rerun decisions are compared with DVC's.
``upstream_jobs`` follows a built DAG's edges back from one output (why an evaluation is missing).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itersg.errors import UserError


@dataclass
class Job:
    """One job of the Snakemake DAG: its rule (name, place among the workflow's rules and shell command
    as written, placeholders unfilled), input, output and log files and wildcards."""

    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    wildcards: dict[str, str] = field(default_factory=dict)
    rule_index: int = 0
    command: str = ""
    logs: list[str] = field(default_factory=list)

    @property
    def stage_name(self) -> str:
        """The job's DVC stage name: rule (dashes) and wildcard values, e.g. ``evaluate-r101-detr-600``."""
        return "-".join([self.rule.replace("_", "-"), *self.wildcards.values()])


@contextlib.contextmanager
def snakemake_dag(root: Path, mode: str, forceall: bool = False, config: dict | None = None) -> Iterator[Any]:
    """The built ``snakemake.dag.DAG`` of the workflow in ``root`` with ``--config mode=MODE`` (and the
    other ``--config`` values in ``config``).

    Snakemake works in ``root`` while the DAG is built and used; the working directory is restored after.
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

    root = Path(root).resolve()
    cwd = Path.cwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                        config_settings=ConfigSettings(config={**(config or {}), "mode": mode}),
                                        snakefile=root / "Snakefile", workdir=root)
            workflow_api.dag(DAGSettings(forceall=forceall))
            # The API's public verbs print; the DAG itself is read from the workflow they all build.
            workflow = workflow_api._workflow
            workflow._prepare_dag(forceall=forceall, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            yield workflow.dag
    except UserError:
        raise
    except Exception as error:  # Snakemake's own errors: syntax, missing input, ambiguous rules
        raise UserError(f"Snakemake could not build the workflow in {root} (mode {mode}): {error}") from error
    finally:
        os.chdir(cwd)


def _job(job: Any) -> Job:
    rules = [rule.name for rule in job.rule.workflow.rules]
    return Job(job.rule.name, [str(f) for f in job.input], [str(f) for f in job.output], dict(job.wildcards),
               rules.index(job.rule.name), job.rule.shellcmd or "", [str(f) for f in job.log])


def upstream_jobs(dag: Any, target: str) -> list[tuple[str, list[str]]]:
    """(log, outputs) of the job of ``dag`` (a ``snakemake.dag.DAG``) that writes ``target`` and of every job
    it depends on, nearest first (breadth first); empty when no job writes ``target``."""
    start = [job for job in dag.jobs if target in {str(f) for f in job.output}]
    order, seen = [], set(start)
    while start:
        order += start
        start = [dep for job in start for dep in dag.dependencies[job] if dep not in seen]
        seen.update(start)
        start = list(dict.fromkeys(start))
    return [(str(job.log[0]), [str(f) for f in job.output]) for job in order if job.log]


def workflow_jobs(root: Path, mode: str, config: dict | None = None) -> list[Job]:
    """Every job of the workflow in ``root`` for ``mode`` (full or demo; ``config``: more ``--config``
    values), except the ``all`` target, in the order of their rules in the workflow, then of their stage
    names."""
    with snakemake_dag(root, mode, forceall=True, config=config) as dag:
        jobs = [_job(job) for job in dag.jobs if job.rule.name != "all"]
    return sorted(jobs, key=lambda job: (job.rule_index, job.stage_name))


# Why Snakemake runs a job: its ``Reason`` attribute -> the name used here.
REASONS = {
    "params_changed": "params_changed",
    "input_changed": "input_changed",
    "code_changed": "code_changed",
    "software_stack_changed": "software_changed",
    "_missing_output": "missing_output",
    "_incomplete_output": "incomplete_output",
    "_updated_input": "updated_input",
    "_updated_input_run": "updated_input",
    "forced": "forced",
}


def rerun_reasons(root: Path, mode: str) -> dict[str, set[str]]:
    """Jobs Snakemake would run now: stage name -> why (``params_changed``, ``missing_output``,
    ``updated_input`` (an upstream job runs), ``input_changed`` (other input files), ...)."""
    with snakemake_dag(root, mode) as dag:
        return {_job(job).stage_name: {name for attribute, name in REASONS.items()
                                       if getattr(dag.reason(job), attribute)}
                for job in dag.needrun_jobs() if job.rule.name != "all"}


def changed_jobs(root: Path, mode: str) -> dict[str, set[str]]:
    """Jobs out of date by themselves, whatever runs upstream: stage name -> ``params_changed``,
    ``input_changed`` (other input files than recorded) and/or ``missing_output``.

    Snakemake stops looking for reasons once a job must run because an upstream job runs, so each check is
    made here for every job.
    """
    with snakemake_dag(root, mode) as dag:
        persistence = dag.workflow.persistence
        changed = {}
        for job in dag.jobs:
            if job.rule.name == "all":
                continue
            reasons = {"missing_output"} if not all(Path(f).exists() for f in job.output) else set()
            if not reasons and persistence.params_changed(job):
                reasons.add("params_changed")
            if not reasons and any(persistence.input_changed(job)):
                reasons.add("input_changed")
            if reasons:
                changed[_job(job).stage_name] = reasons
        return changed
