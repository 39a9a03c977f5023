"""Fixtures of the report tests (the study on disk is built once per session)."""

import pytest
from gallery_fixtures import EvaluatedStudy, write_evaluated_study
from report_fixtures import Study, write_study


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    return write_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory) -> EvaluatedStudy:
    """Two variants evaluated on the synthetic dataset: predictions files, metrics, prepare summary."""
    return write_evaluated_study(tmp_path_factory.mktemp("gallery"))
