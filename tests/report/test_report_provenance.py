"""Provenance helpers: git state, software versions, GPU text, stage wall times."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from itersg.report.inputs import BenchmarkRecord
from itersg.report.provenance import _gpu_text, git_state, hms, software_versions, stage_times

ROOT = Path(__file__).resolve().parents[2]


def test_git_state_outside_a_repository(tmp_path):
    state = git_state(tmp_path)
    assert state.commit is None and state.dirty is None and "not a git work tree" in state.note


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_git_state_of_the_project():
    state = git_state(ROOT)
    assert re.fullmatch(r"[0-9a-f]{40}", state.commit) and state.dirty in (True, False)


def test_software_versions_come_from_metadata():
    versions = dict(software_versions(("numpy", "surely-not-a-package")))
    assert re.match(r"3\.\d+", versions["python"])
    assert re.match(r"\d+\.\d+", versions["numpy"])
    assert versions["surely-not-a-package"] == "not installed"


@pytest.mark.parametrize(("timing", "text"), [
    ({"device": "cuda:0", "gpu_model": "NVIDIA H100", "gpu_count": 4}, "NVIDIA H100 × 4"),
    ({"gpu_name": "NVIDIA A100"}, "NVIDIA A100"),
    ({"num_gpus": 2}, "GPU × 2"),
    ({"gpu": "Tesla T4"}, "gpu: Tesla T4"),
    ({"device": "cpu"}, ""),
])
def test_gpu_text(timing, text):
    assert _gpu_text(timing) == text


def test_stage_times_sum_jobs_per_rule():
    records = [BenchmarkRecord(Path("a"), "train", "a", 3600.0, 100.0, None),
               BenchmarkRecord(Path("b"), "train", "b", 1800.4, 300.0, None),
               BenchmarkRecord(Path("c"), "report", "all", 2.0, None, None)]
    times = {t.rule: t for t in stage_times(records)}
    assert times["train"].jobs == 2 and times["train"].seconds == pytest.approx(5400.4)
    assert times["train"].max_rss_mb == 300.0 and times["report"].max_rss_mb is None
    assert hms(times["train"].seconds) == "1:30:00"
