"""`pxgl chat`'s conversation (docs/FORMATS.md §16.4) on the passes executor: each answer is the oracle's greedy
answer to the whole conversation's ids, a second turn computes only the positions after the prefix the slot
holds, an end-of-sequence id ends an answer (§16.2), and the oldest turns are dropped to fit the context."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pxgl.chat.prompt import ChatFormat
from pxgl.chat.session import ChatSession
from pxgl.errors import PxglError
from pxgl.loading import open_model
from pxgl.transformer.engine import TransformerEngine
from pxgl.transformer.gpu import Choice

from tests.chat_models import TEMPLATE, write_member
from tests.reference import transformer as oracle


@dataclass
class Counting:
    """The executor, the positions each prefill computes recorded."""

    inner: Any
    prefilled: list[int] = field(default_factory=list)

    def truncate(self, slot: int, n: int) -> None:
        self.inner.truncate(slot, n)

    def prefill(self, slot: int, tokens: Sequence[int], choice: Any = None, step: int = 0) -> Any:
        self.prefilled.append(len(tokens))
        return self.inner.prefill(slot, tokens, choice, step)

    def decode(self, *args: Any) -> Any:
        return self.inner.decode(*args)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def session_of(member, executor, max_tokens: int, **more) -> ChatSession:
    chat = ChatFormat.of(member.tokenizer, member.path.name)
    context = member.meta["context_length"]
    return ChatSession(executor, chat, context, member.bos, Choice(), max_tokens, **more)


def test_answers_are_the_oracles_and_a_second_turn_computes_only_what_follows_the_held_prefix(tmp_path, seed, gpu):
    member = write_member(tmp_path, seed)
    with TransformerEngine(open_model(member.path, "passes"), gpu=gpu, slots=1) as engine:
        executor = Counting(engine.executor)
        session = session_of(member, executor, 12)
        answers = []
        for text in ("hello there", "how are you?"):
            ids, dropped = session.fitted(text)
            assert dropped == 0 and ids.count(member.bos) == 1, "BOS once: the template writes it"
            held = list(session.held)
            turn = session.answer(ids, lambda data: None, lambda: False)
            tokens = [choice.token for choice in turn.row.steps]
            expected = member.greedy(ids, 12)
            assert tokens[: len(expected)] == expected, f"turn {len(answers)}: {tokens} against {expected}"
            if member.ended(expected, 12):
                assert tokens == expected and turn.row.finish_reason == ("length" if len(tokens) == 12 else "eos")
            keep = min(common_prefix(held, ids), len(ids) - 1)
            assert executor.prefilled[-1] == len(ids) - keep == turn.computed - (len(tokens) - 1)
            answers.append((ids, tokens, turn))
        (first, tokens, _), (second, _, turn) = answers
        assert turn.reused >= len(first) - 2, "the second turn reuses the first's prompt (its last piece may differ)"
        assert second[: len(first) - 2] == first[: len(first) - 2]
        kept = [c.token for c in answers[0][2].row.kept]
        assert session.messages[1] == {"role": "assistant", "content": member.tokenizer.decode(kept)}


def test_an_end_of_sequence_id_ends_the_answer_before_its_bytes(tmp_path, seed, rng, gpu):
    no_eos_text = TEMPLATE.replace("{{ eos_token }}", "")  # the prompt the same whichever id ends an answer
    plain = write_member(tmp_path / "plain", seed, template=no_eos_text, eos=None)
    ids, _ = session_of(plain, None, 8).fitted("hello")
    expected = plain.greedy(ids, 8)
    if not expected:
        pytest.skip("the first step is a near-tie: nothing to compare (rare)")
    eos = expected[int(rng.integers(len(expected)))]
    end = expected.index(eos)
    member = write_member(tmp_path / "ended", seed, template=no_eos_text, eos=plain.tokenizer.id_string(eos))
    assert member.tokenizer.eos_ids == (eos,) and member.params.keys() == plain.params.keys()
    with TransformerEngine(open_model(member.path, "passes"), gpu=gpu, slots=1) as engine:
        session = session_of(member, engine.executor, 8)
        assert session.fitted("hello")[0] == ids
        turn = session.answer(ids, lambda data: None, lambda: False)
    got = [c.token for c in turn.row.steps]
    assert turn.row.finish_reason == "eos" and got == expected[: end + 1], (got, expected, eos)
    assert [c.token for c in turn.row.kept] == expected[:end]
    assert turn.row.data == member.tokenizer.decode(expected[:end]).encode()


def test_the_oldest_turns_are_dropped_to_fit_and_a_message_alone_past_the_context_is_refused(tmp_path, seed):
    member = write_member(tmp_path, seed, context=96)
    system = {"role": "system", "content": "be brief"}
    session = session_of(member, None, 8, messages=[system])
    answer = {"role": "assistant", "content": "fine, thanks!"}
    dropped_total = 0
    for turn in range(12):
        ids, dropped = session.fitted(f"how are you? {turn}")
        dropped_total += dropped
        assert len(ids) + 8 <= 96 and session.messages[0] == system
        assert session.messages[-1] == {"role": "user", "content": f"how are you? {turn}"}
        session.messages.append(answer)
    assert dropped_total > 0, "12 turns pass a context of 96 positions"
    before = list(session.messages)
    with pytest.raises(PxglError, match="passes the model's context of 96"):
        session.fitted("hello there " * 40)
    assert session.messages == before


def test_sampled_turns_draw_on_from_the_steps_the_answers_before_them_took(tmp_path, seed, gpu):
    """§16.4: draw row 0, step numbers continuing across answers, each token §11's choice in the oracle."""
    member = write_member(tmp_path, seed, eos=None)
    sampler = Choice(temperature=3.0, seed=seed)  # flat enough that the draw, not the logits, decides
    with TransformerEngine(open_model(member.path, "passes"), gpu=gpu, slots=1) as engine:
        chat = ChatFormat.of(member.tokenizer, member.path.name)
        session = ChatSession(engine.executor, chat, member.meta["context_length"], member.bos, sampler, 10)
        compared = drawn = 0
        for text in ("hello there", "how are you?"):
            ids, _ = session.fitted(text)
            tokens = [c.token for c in session.answer(ids, lambda data: None, lambda: False).row.steps]
            sequence = list(ids)
            for step, token in enumerate(tokens):
                logits = oracle.forward(member.meta, member.params, sequence)[-1]
                expected, excused = oracle.choose(logits, 3.0, 0, 1.0, seed, 0, drawn + step)
                if excused:
                    break
                assert token == expected, f"{text!r}, step {step} (draw step {drawn + step})"
                sequence.append(token)
                compared += 1
            drawn += len(tokens)
    assert compared, "every first step excused: nothing compared"
