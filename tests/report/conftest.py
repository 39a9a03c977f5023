"""Fixtures of the report tests (the study on disk is built once per session)."""

import pytest
from report_fixtures import Study, write_study


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    return write_study(tmp_path_factory.mktemp("study"))
