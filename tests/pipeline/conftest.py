"""Fixtures of the pipeline tests."""

from pathlib import Path

import pytest
from pipeline_helpers import make_tiny_project


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    """The project copied to tmp_path/project, switched to a tiny demo, as a git repository."""
    return make_tiny_project(tmp_path / "project")
