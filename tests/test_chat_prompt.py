"""A conversation's ids (docs/FORMATS.md §16.1): BOS once — put first where the tokenizer asks for it, not twice
where the template writes it; a model without a template is one line; the end-of-sequence id ends a row before
its bytes, releasing what a stop string held back (§16.2), and /v1/completions says `stop` for it."""

import numpy as np
import pytest
from pxgl.chat.prompt import ChatFormat, read_template
from pxgl.chat.template import ChatTemplate, ChatTemplateError
from pxgl.errors import PxglError
from pxgl.generation import Choice, GeneratedStep, TextRow
from pxgl.serve.completions import Answer
from pxgl.text_tokenizer.hf import tokenizer_from_hf
from pxgl.tokenizer import Tokenizer

from tests.chat_models import TEXT, hf_folder
from tests.test_streamed_text import PieceTokens

WITH_BOS = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
WITHOUT_BOS = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def bytes_tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXT, 280)


@pytest.mark.parametrize("template", [WITH_BOS, WITHOUT_BOS])
@pytest.mark.parametrize("add_bos", [True, False])
def test_bos_comes_once_where_the_tokenizer_asks_for_it(tmp_path, template, add_bos):
    """transformers' ids (its apply_chat_template adds no BOS of its own), with BOS first where add_bos asks
    for it and the template did not write it."""
    from transformers import AutoTokenizer

    folder = hf_folder(tmp_path, template, add_bos=add_bos)
    tokenizer = tokenizer_from_hf(folder)
    ids = ChatFormat.of(tokenizer, "t").ids(HELLO)
    reference = AutoTokenizer.from_pretrained(str(folder))
    expected = reference.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=True, return_dict=False)
    if add_bos and expected[:1] != [tokenizer.bos_id]:
        expected = [tokenizer.bos_id, *expected]
    assert ids == expected and ids.count(tokenizer.bos_id) == (1 if add_bos or template == WITH_BOS else 0)


def test_a_model_without_a_template_is_one_line_naming_template(bytes_tokenizer, tmp_path):
    with pytest.raises(PxglError, match="has no chat template; give one with --template FILE"):
        ChatFormat.of(bytes_tokenizer, "m.pxi")
    (tmp_path / "t.jinja").write_bytes(b"\xff{{ x }}")
    with pytest.raises(PxglError, match="cannot read the chat template as UTF-8"):
        read_template(tmp_path / "t.jinja")
    (tmp_path / "t.jinja").write_text("{% if %}")
    with pytest.raises(ChatTemplateError, match=r"t.jinja: line 1"):
        read_template(tmp_path / "t.jinja")


def test_a_template_rendering_nothing_is_its_error_not_an_empty_prompt(bytes_tokenizer):
    """`"".__class__` is undefined in the sandbox: it renders as nothing, and so the whole prompt did (pxgl chat
    then failed on truncating its slot to -1, serve answered that as a 400)."""
    empty = ChatFormat(ChatTemplate('{{ "".__class__ }}', "t.jinja"), bytes_tokenizer)
    with pytest.raises(ChatTemplateError, match=r"^chat template: t.jinja: it renders no text for these messages"):
        empty.ids(HELLO)


def choice(token: int) -> Choice:
    return Choice(token, 0, -1.0, [])


def test_an_end_of_sequence_id_ends_a_row_before_its_bytes_releasing_what_a_stop_string_held():
    pieces = PieceTokens({1: b"ab", 2: b"<", 3: b"</s>", 9: b"zz"})
    row = TextRow(pieces, [b"<e"], eos_ids=(3,))
    shown = [row.add(choice(t)) for t in (1, 2)]
    assert shown == [b"ab", b""], "'<' may begin the stop string: held back"
    assert row.add(choice(3)) == b"<" and row.stopped and row.finish_reason == "eos"
    assert row.add(choice(9)) == b"" and row.finish() == b""
    assert row.data == b"ab<" and [c.token for c in row.kept] == [1, 2] and [c.token for c in row.steps] == [1, 2, 3]
    plain = TextRow(pieces, [], eos_ids=(3,))
    assert plain.add(choice(1)) == b"ab" and plain.finish_reason == "length"


def test_completions_say_stop_for_an_end_of_sequence_id():
    answer = Answer(PieceTokens({1: b"ab", 3: b"</s>"}), [], eos_ids=(3,))

    def step(token: int) -> GeneratedStep:
        empty = np.zeros((1, 0))
        return GeneratedStep(0, np.array([token]), np.zeros(1, np.uint8), np.full(1, -1.0, np.float32), empty, empty)

    assert answer.add(step(1), 0) == "ab" and answer.add(step(3), 0) == "" and answer.finish_reason == "stop"
    assert answer.tokens == 1


def test_serve_answers_a_chat_for_a_model_without_a_template_with_a_400_naming_chat_template(bytes_tokenizer):
    from types import SimpleNamespace

    from pxgl.serve.chat import ChatServer
    from pxgl.serve.requests import BadRequest

    runnable = SimpleNamespace(model=SimpleNamespace(tokenizer=bytes_tokenizer))
    with pytest.raises(BadRequest, match="give one with pxgl serve --chat-template FILE") as refused:
        ChatServer({"m": runnable}, None).format("m")  # type: ignore[dict-item]
    assert refused.value.status == 400 and refused.value.param == "model"
    given = ChatServer({"m": runnable}, ChatTemplate(WITHOUT_BOS, "t")).format("m")  # type: ignore[dict-item]
    assert given.tokenizer is bytes_tokenizer
