"""Shared fixtures. Real ImageNet files come from --real-data or TINYALEX_REAL_DATA.

In CI (CI=true) a missing real-data folder is an error, never a skip.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from tinyalex.data.cache import write_prepared
from tinyalex.kernels import dispatch


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


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """4 classes x 16 training / 4 validation 64-px images whose colour tells the class."""
    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])

    def images(n_per_class):
        labels = np.repeat(np.arange(4), n_per_class)
        noise = rng.integers(-60, 60, (len(labels), 64, 64, 3))
        return np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels

    train_x, train_y = images(16)
    val_x, val_y = images(4)
    path = tmp_path_factory.mktemp("data") / "prepared"
    meta = {"classes": ["c0", "c1", "c2", "c3"], "names": ["red", "green", "blue", "yellow"],
            "kind": "test", "source": "tests", "subset": "all"}
    return write_prepared(path, train_x, train_y, val_x, val_y, meta)


@pytest.fixture(params=["numba", "numpy"])
def fast_path(request):
    """A test twice: the fast variants on, and off (the readable bodies, as
    TINYALEX_NO_NUMBA=1). A file runs every test so with
    ``pytestmark = pytest.mark.usefixtures("fast_path")``."""
    with dispatch.settings(fast=request.param == "numba"):
        yield request.param


@pytest.fixture(autouse=True)
def no_stray_data(monkeypatch, tmp_path_factory):
    """Every test sees only the data it is given: the default places of tinyalex's data
    lookup that a test did not make (the repository's data/ and $TINYALEX_REAL_DATA, which
    CI sets) are hidden. A test that needs real data takes ``real_data`` (read at start-up)."""
    from tinyalex.data import find

    monkeypatch.delenv("TINYALEX_REAL_DATA", raising=False)
    monkeypatch.setattr(find, "REPO_DATA", tmp_path_factory.getbasetemp() / "no-repo-data")
