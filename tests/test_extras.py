"""What a missing optional extra's error says to run: the pip command that adds it to this install, from the
checkout or wheel it came from (pxgl is not on the package index, so `pip install 'pxgl[serve]'` fails),
checked by pip itself: a dry run resolves it to pxgl with the extra's packages."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pxgl import extras
from pxgl.cli.app import app
from pxgl.errors import PxglError
from pxgl.evolve.runners import RayRunner
from pxgl.interchange import write_tensors


class Record:
    """A distribution as importlib.metadata lists it, with pip's record of where it was installed from."""

    def __init__(self, direct_url: dict | None) -> None:
        self.direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        return json.dumps(self.direct_url) if name == "direct_url.json" and self.direct_url else None


def installed_from(monkeypatch, direct_url: dict | None) -> None:
    monkeypatch.setattr(extras.metadata, "distributions", lambda **_: [Record(None), Record(direct_url)])


def test_a_missing_serve_extra_names_the_command_that_installs_it_from_this_wheel(monkeypatch, wheel, tmp_path):
    installed_from(monkeypatch, {"url": wheel.as_uri(), "archive_info": {}})
    monkeypatch.setitem(sys.modules, "pxgl.serve", None)  # as if starlette were missing
    with pytest.raises(PxglError) as refused:
        app(["serve"], standalone_mode=False)
    command = str(refused.value).rsplit(": ", 1)[1]
    assert command == f"pip install {shlex.quote(f'{wheel}[serve]')}", refused.value
    report = tmp_path / "report.json"
    program, verb, *arguments = shlex.split(command)
    dry_run = [sys.executable, "-m", program, verb, "--dry-run", "--ignore-installed", "-q", "--report", str(report)]
    resolved = subprocess.run([*dry_run, *arguments], capture_output=True, text=True)
    assert resolved.returncode == 0, resolved.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"pxgl", "starlette", "uvicorn"} <= names, names


def test_an_editable_install_is_told_an_editable_command(monkeypatch, tmp_path):
    checkout = tmp_path / "my checkout"
    checkout.mkdir()
    installed_from(monkeypatch, {"url": checkout.as_uri(), "dir_info": {"editable": True}})
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(PxglError, match=r"^--ray needs Ray: pip install -e (.*)$") as refused:
        RayRunner("local", 1)
    assert shlex.split(str(refused.value).split("-e ", 1)[1]) == [f"{checkout}[ray]"]


def test_without_a_record_both_ways_are_named(monkeypatch, tmp_path):
    installed_from(monkeypatch, {"url": (tmp_path / "gone.whl").as_uri(), "archive_info": {}})
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(PxglError) as refused:
        write_tensors(tmp_path / "t.safetensors", {"embed": np.zeros((2, 2), np.float32)}, {})
    message = str(refused.value)
    assert "pip install '.[safetensors]' in a pxgl checkout" in message, message
    assert f"pip install 'pxgl-{extras.__version__}-py3-none-any.whl[safetensors]'" in message, message
    assert not Path(tmp_path / "t.safetensors").exists()
