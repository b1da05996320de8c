import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Tests never write into the user's cache (engine/cache.py): the engines of a test run share one of their own.
os.environ.setdefault("PXGL_CACHE_DIR", tempfile.mkdtemp(prefix="pxgl-test-cache-"))


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


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout, once per test run (packaging and README tests share it)."""
    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(root)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("pxgl-*.whl")
    return path


@pytest.fixture(scope="session")
def browser() -> str:
    """A headless Chromium's path (tests/browser.py installs one where it can); the test is skipped, saying
    why, only where none can be had."""
    from tests.browser import ensure_browser

    path, why = ensure_browser()
    if path is None:
        pytest.skip(f"no headless browser: {why}")
    return path
