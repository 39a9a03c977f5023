"""Helpers of the pipeline tests: a copy of the project configured for a tiny demo run of the whole DAG."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from itersg.workflow.dvc_stages import DVC_FILES

ROOT = Path(__file__).resolve().parents[2]
DEMO_DVC = str(DVC_FILES["demo"])
# The demo switch plus a smaller scale so that every DAG test finishes in a few minutes on 2 cores.
TINY_DEMO = {
    "synth": {"images": 160},
    "detr_weights": {"pretrain_iterations": 12, "deformable_pretrain_iterations": 12},
    "study": {"variants": ["r101-detr", "vovnet39-centermask"], "eval_iterations": [8, 16]},
    "train": {"iterations": 16, "batch_size": 4, "checkpoint_every": 4, "val_every": 8, "val_images": 8,
              "log_every": 4},
    "data": {"num_val_images": 10},
    "evaluate": {"batch_size": 8},
}


def ran_stages(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran, sorted."""
    return sorted(re.findall(r"Running stage '(?:[^':]+:)?([^']+)'", output))


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a clone of the working tree would hold."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if (f and (ROOT / f).exists()) or (f and (ROOT / f).is_symlink())]


def copy_project(dest: Path) -> Path:
    for name in project_files():
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        else:
            shutil.copy2(source, target)
    return dest


def set_tiny_demo(project: Path) -> None:
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["mode"] = "demo"
    for section, values in TINY_DEMO.items():
        params["demo"].setdefault(section, {}).update(values)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_tiny_project(dest: Path) -> Path:
    """The project copied to ``dest``, switched to a tiny demo, as a git repository with one commit."""
    project = copy_project(dest)
    set_tiny_demo(project)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=project, check=True)
    return project


def copy_run(project: Path, dest: Path) -> Path:
    """A copy of a project after a run (results, Snakemake's records, git), without its SLURM job logs."""
    shutil.copytree(project, dest, symlinks=True)
    shutil.rmtree(dest / "logs" / "slurm", ignore_errors=True)
    return dest


def with_venv(env: dict | None = None) -> dict:
    """``env`` (default: ours) with the venv's executables (itersg, snakemake, dvc) first on PATH."""
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: list[str], cwd: Path, env: dict | None = None, timeout: float = 1500) -> subprocess.CompletedProcess:
    """Run a command with the venv's executables first on PATH; fail the test with its output."""
    result = subprocess.run(command, cwd=cwd, env=with_venv(env), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "logs").rglob("*.log"))[-6:])
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-4000:]}\n{logs}")
    return result
