"""DVC over the Snakemake DAG: repro, a one-variant parameter change, a no-op, commit after snakemake."""

import json
import re

import pytest
import yaml
from pipeline_helpers import run

pytestmark = pytest.mark.slow


def _ran_stages(output: str) -> list[str]:
    return sorted(re.findall(r"Running stage '([^']+)'", output))


def test_dvc_repro_reruns_exactly_what_a_parameter_touches(tiny_project):
    run(["itersg", "pipeline", "dvc"], tiny_project)
    first = run(["dvc", "repro"], tiny_project)
    stages = yaml.safe_load((tiny_project / "dvc.yaml").read_text())["stages"]
    assert _ran_stages(first.stdout) == sorted(stages)

    noop = run(["dvc", "repro"], tiny_project)
    assert _ran_stages(noop.stdout) == []
    assert run(["dvc", "status"], tiny_project).stdout.strip().endswith("Data and pipelines are up to date.")

    params_path = tiny_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["variants"]["r101-detr"]["beta"] = 0.5
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = run(["dvc", "repro"], tiny_project)
    assert _ran_stages(rerun.stdout) == ["evaluate-r101-detr-16", "evaluate-r101-detr-8", "report", "train-r101-detr"]
    assert _ran_stages(run(["dvc", "repro"], tiny_project).stdout) == []


def test_dvc_commit_takes_over_a_snakemake_run(tiny_project):
    run(["itersg", "pipeline", "dvc"], tiny_project)
    run(["snakemake", "--cores", "2"], tiny_project)
    run(["dvc", "commit", "-f"], tiny_project)
    assert run(["dvc", "status"], tiny_project).stdout.strip().endswith("Data and pipelines are up to date.")
    assert _ran_stages(run(["dvc", "repro"], tiny_project).stdout) == []
    run(["dvc", "push"], tiny_project)
    assert any((tiny_project / "dvc-remote").rglob("*"))

    # After a training parameter changes, DVC finds the stages that read it changed, and Snakemake reruns
    # them and everything downstream of them (it reran nothing when the rules did not list the value).
    params_path = tiny_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["demo"]["train"]["lr"] = 1e-4
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_changed = sorted(json.loads(run(["dvc", "status", "--json"], tiny_project).stdout))
    assert dvc_changed == ["pretrain-detr", "train-r101-detr", "train-vovnet39-centermask"]
    snakemake_jobs = _snakemake_jobs(run(["snakemake", "--cores", "2", "-n"], tiny_project).stdout)
    downstream = ["replicate-decoder", "report", *(f"evaluate-{v}-{i}" for v in ("r101-detr", "vovnet39-centermask")
                                                   for i in (8, 16))]
    assert snakemake_jobs == sorted([*dvc_changed, *downstream])


def _snakemake_jobs(dry_run: str) -> list[str]:
    """The jobs of a dry run, named as their DVC stages: rule-wildcard values (`all` is not a stage)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match and match.group(1) != "all":
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            values = [item.split("=", 1)[1] for item in wildcards.group(1).split(", ")] if wildcards else []
            jobs.append("-".join([match.group(1).replace("_", "-"), *values]))
    return sorted(jobs)
