"""The slots API (engine/transformer/gpu/base.py) over an executor that holds one sequence and keeps no logits
while it generates: the pxvm executor of version 2 (engine/transformer/pxvm/). One slot; a prefill runs the
program and reads the last row's logits (its choice greedy, its log p from them); a decode of `count` steps is
the executor's own greedy generation on the GPU, whose log-probabilities are absent (NaN, §11); no scoring."""

from collections.abc import Sequence

import numpy as np

from ..errors import PxglError
from ..gl import GLBackend
from .gpu import Choice, Chosen, Prefill
from .meta import TransformerSpec
from .pxvm.executor import PxvmTransformer, check_greedy
from .pxvm.program import TransformerProgram


class PxvmSequence:
    """The pxvm executor with one slot, as TransformerEngine drives every executor."""

    def __init__(
        self,
        gpu: GLBackend,
        spec: TransformerSpec,
        weight_bytes: np.ndarray,
        slots: int = 1,
        program: TransformerProgram | None = None,
    ) -> None:
        self.inner = PxvmTransformer(gpu, spec, weight_bytes, program)
        self.slots, self.cache_bytes = 1, self.inner.cache_bytes
        self._pending: int | None = None

    def truncate(self, slot: int, n: int) -> None:
        if slot != 0 or n != 0:
            raise PxglError("this executor holds one sequence and reuses no prefix: truncate slot 0 to 0 only")
        self.inner.reset()
        self._pending = None

    def prefill(
        self,
        slot: int,
        tokens: Sequence[int],
        choice: Choice | None = None,
        step: int = 0,
        all_logits: bool = False,
        targets: Sequence[int] | None = None,
    ) -> Prefill:
        if targets is not None:
            raise PxglError("the pxvm executor predicts but does not score; use -x passes or fused")
        if choice is not None:
            check_greedy(choice)
        ahead = [] if self._pending is None else [self._pending]
        run = self.inner.run([*ahead, *tokens], all_logits=all_logits)
        chosen = None
        if choice is not None:
            logits = run.logits[-1].astype(np.float64)
            top = logits.max()
            token = int(run.ids[-1])
            logprob = logits[token] - top - np.log(np.exp(logits - top).sum())
            chosen = Chosen(*one_row([token], [logprob]))
            self._pending = token
        else:
            self._pending = None
        return Prefill(run.logits[len(ahead) :] if all_logits else run.logits, run.ids, run.sums, chosen)

    def decode(self, slots: Sequence[int], choices: Sequence[Choice], steps: Sequence[int], count: int) -> Chosen:
        if list(slots) != [0] or self._pending is None:
            raise PxglError("this executor decodes slot 0 after a prefill that chose its next token")
        check_greedy(choices[0])
        ids = self.inner.generate([self._pending], count)
        self._pending = int(ids[-1])
        return Chosen(*one_row(ids, [np.nan] * count))

    def close(self) -> None:
        self.inner.close()


def one_row(ids: Sequence[int] | np.ndarray, logprobs: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Chosen's arrays for one row of len(ids) steps: (steps, 1) ids and log p, no alternatives."""
    shape = (len(ids), 1)
    return (
        np.asarray(ids, np.int64).reshape(shape),
        np.asarray(logprobs, np.float32).reshape(shape),
        np.zeros((*shape, 0), np.int64),
        np.zeros((*shape, 0), np.float32),
    )
