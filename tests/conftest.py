import os
import secrets

import numpy as np
import pytest


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh seed each run (or PXGL_TEST_SEED to replay one); pytest prints it when the test fails."""
    value = int(os.environ.get("PXGL_TEST_SEED") or secrets.randbits(32))
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    seeds = [v for k, v in item.user_properties if k == "seed"]
    if report.failed and seeds:
        report.sections.append(("seed", f"replay with PXGL_TEST_SEED={seeds[0]}"))


@pytest.fixture(scope="session")
def gpu():
    from pxgl.gl import GLBackend

    return GLBackend()
