"""Failed-status metrics for the evaluations a failed workflow run left missing, with the failed job's error
(found along the edges of the workflow's own Snakemake DAG)."""

import json
import os
from pathlib import Path

import pytest

from itersg.config import load_params
from itersg.report.inputs import load_metrics
from itersg.workflow import paths
from itersg.workflow.dag import snakemake_dag
from itersg.workflow.failures import write_failure_metrics

ROOT = Path(__file__).resolve().parents[2]


def _dag(mode: str):
    with snakemake_dag(ROOT, mode, forceall=True) as dag:
        return dag  # its jobs and edges stay readable after Snakemake is closed


@pytest.fixture(scope="module")
def demo_dag():
    return _dag("demo")


@pytest.fixture(scope="module")
def full_dag():
    return _dag("full")


def _touch(root: Path, path: str, text: str = "") -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)


def test_each_missing_evaluation_names_the_failed_job_nearest_to_it(tmp_path, demo_dag):
    params = load_params(ROOT / "params.yaml", ["mode=demo"])
    r101, vov, centermask = params["study"]["variants"]
    first, last = params["study"]["eval_iterations"]
    for path in (paths.prepare_summary(params), paths.verified_flag(params),
                 paths.replicated_init(params), paths.final_weights(params, vov),
                 paths.metrics_file(params, vov, first), paths.metrics_file(params, centermask, first),
                 paths.metrics_file(params, centermask, last)):
        _touch(tmp_path, path, "{}")
    _touch(tmp_path, paths.log_file(params, "train", r101),
           "itersg launch: srun ...\nitersg: error: out of memory; lower train.batch_size\n"
           "srun: error: node1: task 0: Exited with exit code 2\n")
    _touch(tmp_path, paths.log_file(params, "evaluate", f"{vov}_{last}"),
           "Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access\n")

    written = write_failure_metrics(params, demo_dag, tmp_path)

    records = {(r["variant"], r["iteration"]): r for r in (json.loads(p.read_text()) for p in written)}
    assert set(records) == {(r101, first), (r101, last), (vov, last)}
    assert records[(r101, first)]["error"] == ("train failed: itersg: error: out of memory; lower train.batch_size "
                                               f"(log: {paths.log_file(params, 'train', r101)})")
    assert records[(vov, last)]["error"].startswith("evaluate failed: RuntimeError: CUDA error")
    # the report reads them as failed evaluations
    selection = load_metrics([str(p) for p in written])
    assert {m.status for m in selection.files} == {"failed"}


def test_a_log_left_by_an_earlier_run_is_not_the_reason(tmp_path, demo_dag):
    # an earlier run evaluated r101-detr (its log stays); this run's training of it failed
    params = load_params(ROOT / "params.yaml", ["mode=demo"])
    r101 = params["study"]["variants"][0]
    first = params["study"]["eval_iterations"][0]
    for path in (paths.prepare_summary(params), paths.verified_flag(params), paths.replicated_init(params)):
        _touch(tmp_path, path, "{}")
    stale = paths.log_file(params, "evaluate", f"{r101}_{first}")
    _touch(tmp_path, stale, "r101-detr @ 8 on test: R@50 = 0.0000\n")
    os.utime(tmp_path / stale, (1_000_000_000, 1_000_000_000))
    _touch(tmp_path, paths.log_file(params, "train", r101), "itersg: error: cannot read r101-detr_init.pth\n")

    record = json.loads(next(p for p in write_failure_metrics(params, demo_dag, tmp_path)
                             if json.loads(p.read_text())["iteration"] == first).read_text())
    assert record["error"].startswith("train failed: itersg: error: cannot read r101-detr_init.pth")


def test_an_evaluation_whose_jobs_never_started(tmp_path, demo_dag):
    params = load_params(ROOT / "params.yaml", ["mode=demo"])
    written = write_failure_metrics(params, demo_dag, tmp_path)
    assert len(written) == len(params["study"]["variants"]) * len(params["study"]["eval_iterations"])
    assert json.loads(written[0].read_text())["error"].startswith("not run: a job it depends on failed")


def test_a_failed_download_of_the_released_detr_is_named(tmp_path, full_dag):
    params = load_params(ROOT / "params.yaml", [])  # full mode: the released DETR
    assert params["study"]["variants"][0] == "r101-detr"
    for path in (paths.prepare_summary(params), paths.verified_flag(params), paths.vg_files(params)["h5"]):
        _touch(tmp_path, path, "{}")
    _touch(tmp_path, paths.log_file(params, "fetch_detr"),
           "itersg: error: iterativesg-detr-vg must be downloaded by hand; put it at resources/weights/x.pth\n")
    [first, *_] = write_failure_metrics(params, full_dag, tmp_path)
    assert json.loads(first.read_text())["error"].startswith("fetch_detr failed: itersg: error: iterativesg-detr-vg")
