"""Fixtures of the pipeline tests."""

import subprocess
from pathlib import Path

import pytest
from pipeline_helpers import copy_project, set_tiny_demo


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    """The project copied to tmp_path/project, switched to a tiny demo, as a git repository."""
    project = copy_project(tmp_path / "project")
    set_tiny_demo(project)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=project, check=True)
    return project
