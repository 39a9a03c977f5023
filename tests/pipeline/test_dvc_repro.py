"""`dvc repro` runs the demo, then does nothing, then reruns exactly what a changed parameter touches."""

from pathlib import Path

import pytest
import yaml
from pipeline_helpers import DEMO_DVC, ran_stages, run

pytestmark = pytest.mark.slow


def _edit_params(project: Path, edit) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_runs_the_demo_and_reruns_exactly_what_a_parameter_touches(tiny_project):
    tracked = run(["git", "status", "--porcelain"], tiny_project).stdout
    run(["itersg", "pipeline", "dvc"], tiny_project)
    first = run(["dvc", "repro", DEMO_DVC], tiny_project)
    stages = yaml.safe_load((tiny_project / DEMO_DVC).read_text())["stages"]
    assert ran_stages(first.stdout) == sorted(stages)
    assert (tiny_project / "reports/demo/report.html").is_file()

    noop = run(["dvc", "repro", DEMO_DVC], tiny_project)
    assert ran_stages(noop.stdout) == []
    assert run(["dvc", "status", DEMO_DVC], tiny_project).stdout.strip().endswith("Data and pipelines are up to date.")

    _edit_params(tiny_project, lambda p: p["variants"]["r101-detr"].update(beta=0.5))
    rerun = run(["dvc", "repro", DEMO_DVC], tiny_project)
    assert ran_stages(rerun.stdout) == ["evaluate-r101-detr-16", "evaluate-r101-detr-8", "report", "train-r101-detr"]
    assert ran_stages(run(["dvc", "repro", DEMO_DVC], tiny_project).stdout) == []
    # The study's dvc.yaml was not touched by the demo's runs (only the demo's lock file is new).
    changed = run(["git", "status", "--porcelain"], tiny_project).stdout
    assert {line[3:] for line in changed.splitlines()} - {line[3:] for line in tracked.splitlines()} \
        <= {"demo/", "demo/dvc.lock", "demo/dvc.yaml", "params.yaml"}


