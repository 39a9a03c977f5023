"""Every command the README and docs/reproduce.md show is run by a test, or says why it cannot run here."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/reproduce.md")

# Commands run right here, in the project root (they only read).
RUN_HERE = {
    "itersg fetch --list",
    "snakemake -n --profile slurm",
    "snakemake -n",
}
# Commands a slow end-to-end test runs (at demo scale), with the test that does.
RUN_BY_TEST = {
    "make demo": "tests/pipeline/test_demo_dag.py",
    "make test": ".ci/run (this suite itself)",
    "snakemake --profile slurm": "tests/pipeline/test_slurm_pipeline.py",
    "dvc commit -f dvc.yaml": "tests/pipeline/test_dvc.py (with the demo's file)",
    "dvc status dvc.yaml": "tests/pipeline/test_dvc.py (with the demo's file)",
    "dvc push": "tests/pipeline/test_dvc.py",
    "dvc repro --dry": "tests/pipeline/test_dvc.py",
    "dvc repro": "tests/pipeline/test_dvc_repro.py",
    "itersg data verify --root resources/vg": "tests/data/test_verify.py (on the synthetic dataset)",
    "itersg predict --checkpoint results/demo/train/r101-detr/model_final.pth --variant r101-detr --set mode=demo "
    "photo.jpg --out predictions": "tests/test_predict.py (on synthetic images with a small checkpoint)",
    "source .venv/bin/activate": "Makefile (make test creates .venv)",
}
# Commands that need the internet or a clone URL.
CANNOT_RUN_HERE = {
    "git clone <this repository> itersg && cd itersg": "needs the repository's URL",
    "itersg fetch vg weights --dest resources --skip-manual": "downloads 15 GB from the internet "
                                                              "(tests/fetch covers it on 127.0.0.1)",
}


def shown_commands() -> list[str]:
    commands = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for block in re.findall(r"```(?:console|bash)\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("$ ") and not line.startswith("$ #"):
                    commands.append(line[2:].strip())
                elif doc == "README.md" and line.startswith("make "):
                    commands.append(line)
    return commands


def test_every_shown_command_is_accounted_for():
    known = RUN_HERE | set(RUN_BY_TEST) | set(CANNOT_RUN_HERE)
    unknown = [c for c in shown_commands() if c not in known]
    assert unknown == [], "classify these commands in tests/test_docs_commands.py"
    for path in RUN_BY_TEST.values():
        assert (ROOT / path.split()[0]).exists(), path


@pytest.mark.parametrize("command", sorted(RUN_HERE))
def test_command_runs_here(command):
    executable = Path(sys.executable).parent
    argv = shlex.split(command)
    result = subprocess.run([str(executable / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
