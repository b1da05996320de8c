"""Hostile chat templates (docs/FORMATS.md §16.1's bounds; issue 28 item 6): each is one ChatTemplateError
naming what it did, within the bounds of output, time and what one operation makes; through `pxgl chat`, one
line, exit status 2, within the memory a sound template's chat takes plus 200 MB; through `pxgl serve`, a 400
with that line, the server serving on."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pxgl.chat import template as template_module
from pxgl.chat.template import MAX_ITEMS, ChatTemplate, ChatTemplateError

from tests.chat_models import TEMPLATE, write_member
from tests.cli_process import PEAK_MEMORY

MB = 1 << 20


@pytest.mark.parametrize(
    "source, says",
    [
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "past 0.2 seconds"),
        ("{{ 'a' * 10**10 }}", "would make 10,000,000,000 items"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{% set n = namespace(s='ab') %}{% for i in range(40) %}{% set n.s = n.s ~ n.s %}{% endfor %}", "'~'"),
        ("{% set n = namespace(s='ab') %}{% for i in range(40) %}{% set n.s = n.s + n.s %}{% endfor %}", "'+'"),
        ("{{ 'x'|center(10**9) }}", "center"),
        ("{{ 'x'.ljust(10**9) }}", "ljust"),
        ("{{ '%0999999999d' % 1 }}", "8 digits"),
        ("{{ '{:>999999999}'.format(1) }}", "8 digits"),
        ("{{ ('x' * 4000000)|replace('', 'yy') }}", "replace"),
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", f"passes {MAX_ITEMS:,} characters"),
        ("{{ 9 ** 99999 }}", "exponent"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
        ("{% for %}", "line 1"),
        ("{{ namespace(_x=1) }}", "may not begin with '_'"),
    ],
)
def test_hostile_templates_are_one_error_within_the_bounds(source: str, says: str, monkeypatch):
    monkeypatch.setattr(template_module, "MAX_RENDER_S", 0.2)  # the time bound's mechanism, at a tenth of its time
    with pytest.raises(ChatTemplateError, match=None) as raised:
        ChatTemplate(source, "t.jinja").render([{"role": "user", "content": "hi"}])
    assert says in str(raised.value) and str(raised.value).startswith("chat template: t.jinja"), str(raised.value)


def peak_of_chat(folder: Path, member: Path, template: str) -> tuple[subprocess.CompletedProcess, int]:
    (folder / "t.jinja").write_text(template)
    args = ["chat", "-m", str(member), "--template", "t.jinja", "-n", "2"]
    environment = os.environ | {"MALLOC_ARENA_MAX": "2"}  # the GL driver's threads' arenas vary run to run
    run = subprocess.run([sys.executable, "-c", PEAK_MEMORY, *args], input="hi\n", capture_output=True, text=True,
                         env=environment, cwd=folder)  # fmt: skip
    return run, int(run.stderr.split()[-1])


WILD = {
    "{% set n = namespace(s='ab') %}{% for i in range(40) %}{% set n.s = n.s ~ n.s %}{% endfor %}": "'~'",
    "{% for i in range(100000) %}{{ 'x' * 999 }}{% endfor %}": "rendered text passes",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}": "unsafe",
}
"""Templates a sound model would never ship, and what their one line says."""


def test_a_template_running_wild_is_one_line_status_2_within_the_memory_bound(tmp_path, seed):
    member = write_member(tmp_path, seed)
    sound, baseline = peak_of_chat(tmp_path, member.path, TEMPLATE)
    assert sound.returncode == 0, sound.stderr
    for template, says in WILD.items():
        run, peak = peak_of_chat(tmp_path, member.path, template)
        lines = run.stderr.splitlines()[:-1]  # the last: the peak PEAK_MEMORY prints
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: chat template: t.jinja"), lines
        assert says in lines[0] and "Traceback" not in run.stderr
        assert peak <= baseline + 200 * MB, f"{template}: peak {peak // MB} MiB against {baseline // MB} MiB"


SERVED_WILD = (
    "{% if messages[0].content == 'loop' %}{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}"
    "{% endfor %}{% elif messages[0].content == 'escape' %}{{ ''.__class__.__mro__[1].__subclasses__() }}"
    "{% else %}{{ messages[0].content }}{% endif %}"
)


def test_a_served_template_running_wild_is_a_400_and_the_server_goes_on(tmp_path, seed):
    from openai import BadRequestError, OpenAI

    from tests.test_serve import start_server, stop_server

    member = write_member(tmp_path, seed)
    (tmp_path / "wild.jinja").write_text(SERVED_WILD)
    url, process = start_server(tmp_path, {"member": member.path}, "--chat-template", "wild.jinja", key=None)
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        for content, says in (("loop", "past 2 seconds"), ("escape", "unsafe")):
            with pytest.raises(BadRequestError, match=says) as refused:
                client.chat.completions.create(model="member", messages=[{"role": "user", "content": content}])
            assert refused.value.body["message"].startswith("chat template: wild.jinja")
        answer = client.chat.completions.create(
            model="member", messages=[{"role": "user", "content": "hello"}], max_tokens=2
        )
        assert answer.choices[0].finish_reason in ("length", "stop")
    finally:
        status, stderr = stop_server(process)
    assert status == 0 and "Traceback" not in stderr, stderr
