"""The whole demo DAG, locally: data -> DETR -> train -> evaluate -> report."""

import json

import pytest
from pipeline_helpers import ROOT, run

from itersg.config import load_params
from itersg.workflow.paths import all_metrics, metrics_file

pytestmark = pytest.mark.slow


def test_make_demo_runs_the_dag_to_the_report(tiny_project):
    # the README's command, with this environment's .venv, never reinstalled into from the copy
    (tiny_project / ".venv").symlink_to(ROOT / ".venv")
    run(["make", "-o", ".venv/.installed", "demo"], tiny_project)
    params = load_params(tiny_project / "params.yaml")
    for path in all_metrics(params):
        metrics = json.loads((tiny_project / path).read_text())
        assert metrics["status"] == "ok" and metrics["params"]["total"] > 0
        assert 0 <= metrics["sgdet"]["R@50"] <= 1
    html = (tiny_project / "reports/demo/report.html").read_text()
    assert 'data-status="not run"' not in html and 'data-status="failed"' not in html
    for variant in params["study"]["variants"]:
        for iteration in params["study"]["eval_iterations"]:
            r50 = json.loads((tiny_project / metrics_file(params, variant, iteration)).read_text())["sgdet"]["R@50"]
            cell = (f'data-variant="{variant}" data-iteration="{iteration}" data-metric="R@50" '
                    f'data-source="ours" data-value="{r50}"')
            assert cell in html
    # a second run has nothing to do
    again = run(["snakemake", "--cores", "2", "-n"], tiny_project)
    assert "Nothing to be done" in again.stdout + again.stderr
