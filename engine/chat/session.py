"""`pxgl chat`'s conversation (docs/FORMATS.md §16.4): its messages, and the ids one KV-cache slot of a GPU
executor holds between turns, so that a turn computes only the positions after the prefix it shares with them.
No terminal here: engine/cli/chat.py reads the lines and shows the text."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import PxglError
from ..generation import Choice, TextRow
from ..transformer.gpu import Choice as Sampler
from ..transformer.gpu import Chosen, Prefill
from .prompt import ChatFormat, Message

SLOT = 0
ANSWER_SHARE = 4
"""A turn keeps room for its answer of -n tokens, at most a quarter of the context."""


class SlotExecutor(Protocol):
    def truncate(self, slot: int, n: int) -> None: ...

    def prefill(self, slot: int, tokens: Sequence[int], choice: Sampler | None = None, step: int = 0) -> Prefill: ...

    def decode(self, slots: Sequence[int], choices: Sequence[Sampler], steps: Sequence[int], count: int) -> Chosen: ...


def shared_prefix(held: Sequence[int], ids: Sequence[int]) -> int:
    """Positions of `held` that `ids` can keep: their common prefix, short of the ids' last (it must run)."""
    most = min(len(held), len(ids) - 1)
    differ = np.asarray(held[:most]) != np.asarray(ids[:most])
    return int(np.argmax(differ)) if differ.any() else most


@dataclass
class Turn:
    """What one answer did: its row (text, tokens, why it ended) and the positions it computed and reused."""

    row: TextRow
    computed: int
    reused: int
    interrupted: bool = False


@dataclass
class ChatSession:
    executor: SlotExecutor
    chat: ChatFormat
    context_length: int
    bos: int | None
    """§14.4's meta bos, first in every sequence."""
    sampler: Sampler
    max_tokens: int
    stops: list[bytes] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    """The ids whose positions the slot holds (its pending token not among them)."""
    drawn: int = 0
    """Tokens the answers so far chose: an answer's draw steps continue from here, so a sampled chat's turns
    do not each replay one stream of draws."""

    def __post_init__(self) -> None:
        self.system = 1 if self.messages[:1] and self.messages[0]["role"] == "system" else 0
        self.reserve = min(self.max_tokens, self.context_length // ANSWER_SHARE)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        ids = self.chat.ids(messages)
        return ids if self.bos is None or ids[:1] == [self.bos] else [self.bos, *ids]

    def fitted(self, text: str) -> tuple[list[int], int]:
        """The user's `text` added and the conversation's ids; the oldest turns (a user message and the answer
        after it) dropped while the ids and the answer's room pass the context. Refused in one PxglError, the
        conversation left as it was, where the new turn alone passes it or the template fails."""
        messages = [*self.messages, {"role": "user", "content": text}]
        dropped = 0
        while len(ids := self.prompt_ids(messages)) + self.reserve > self.context_length:
            if len(messages) - self.system <= 1:
                raise PxglError(
                    f"this message is {len(ids)} tokens with the conversation's opening; with room for an answer "
                    f"({self.reserve} tokens) that passes the model's context of {self.context_length}: shorten it"
                )
            del messages[self.system : self.system + 2]
            dropped += 1
        self.messages = messages
        return ids, dropped

    def answer(self, ids: list[int], on_text: Callable[[bytes], None], stopping: Callable[[], bool]) -> Turn:
        """The model's answer after `ids` (what `fitted` gave), its bytes to `on_text` as they come; `stopping()`
        (Ctrl-C) is asked between steps and ends the answer, what it said so far kept in the conversation."""
        keep = shared_prefix(self.held, ids)
        row = TextRow(self.chat.tokenizer, self.stops, self.chat.tokenizer.eos_ids)
        self.held = []  # until the prefill is in, the slot holds nothing worth reusing
        self.executor.truncate(SLOT, keep)
        chosen = self.executor.prefill(SLOT, ids[keep:], self.sampler, step=self.drawn).chosen
        assert chosen is not None
        held, steps, interrupted = list(ids), 0, False
        most = min(self.max_tokens, self.context_length - len(ids))
        while True:
            token = int(chosen.ids[0][0])
            on_text(row.add(Choice(token, 0, float(chosen.logprobs[0][0]), [])))
            steps += 1
            if row.stopped or steps == most:
                break
            if stopping():
                interrupted = True
                break
            chosen = self.executor.decode([SLOT], [self.sampler], [self.drawn + steps], 1)
            held.append(token)
        on_text(row.finish())
        self.held, self.drawn = held, self.drawn + steps
        self.messages.append({"role": "assistant", "content": row.data.decode("utf-8", "replace")})
        return Turn(row, len(ids) - keep + steps - 1, keep, interrupted)


def executor_of(engine: Any) -> SlotExecutor:
    """The engine's executor where it keeps a sequence in a slot between calls (passes, fused)."""
    from ..transformer.gpu import GPUTransformer

    if not isinstance(engine.executor, GPUTransformer):
        raise PxglError(
            f"the {engine.executor_name} executor keeps no KV-cache slot between turns; pxgl chat runs version-2 "
            "models on -x passes or -x fused"
        )
    return engine.executor
