"""A non-editable install carries glsl/ and assets/ and works from any directory."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_shaders_and_the_bundled_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for shader in (ROOT / "glsl").iterdir():
        assert f"pxgl/glsl/{shader.name}" in names
    for asset in (ROOT / "assets").iterdir():
        assert f"pxgl/assets/{asset.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_wheel_installs_pxgl_and_no_top_level_engine(wheel):
    """The source folder is engine/, but the import name is pxgl: a top-level `engine` would clash with any
    other distribution that ships one."""
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "pxgl" in tops and "engine" not in tops
    modules = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    for source in (ROOT / "engine").rglob("*.py"):
        assert f"pxgl/{source.relative_to(ROOT / 'engine').as_posix()}" in modules, source


def test_installed_package_round_trips_text_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = os.environ | {"PYTHONPATH": str(site)}

    def pxgl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pxgl.cli", *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )

    located = subprocess.run(
        [sys.executable, "-c", "import pxgl; print(pxgl.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert located.stdout.startswith(str(site)), "the test must exercise the installed copy, not the source tree"
    encoded = pxgl("encode", "pxOS evolution", "-o", "t.pxi")
    assert encoded.returncode == 0, encoded.stderr
    decoded = pxgl("decode", "t.pxi")
    assert decoded.returncode == 0, decoded.stderr
    assert decoded.stdout == "pxOS evolution\n"
