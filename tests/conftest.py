"""Shared fixtures. Real ImageNet files come from --real-data or TINYALEX_REAL_DATA.

In CI (CI=true) a missing real-data folder is an error, never a skip.
"""

import os
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--real-data", default=os.environ.get("TINYALEX_REAL_DATA"),
                     help="folder holding tiny-imagenet-100.zip, imagenette2-224.tgz, ...")


@pytest.fixture(scope="session")
def real_data(request) -> Path:
    """The folder of real data (../shared/data in CI)."""
    value = request.config.getoption("--real-data")
    if value and Path(value).is_dir():
        return Path(value)
    if os.environ.get("CI"):
        pytest.fail(f"real data folder not found (--real-data / TINYALEX_REAL_DATA = {value!r})")
    pytest.skip("no real data: pass --real-data PATH or set TINYALEX_REAL_DATA")
