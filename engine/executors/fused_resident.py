"""The fused executor, with one prompt at a time taken without a launch per prompt: fused_small compiled
RESIDENT stays running on the GPU and takes each prompt from a mailbox in host memory (its words:
glsl/fused_common.glsl), so a prompt costs the host's stores, the GPU's forward pass and the host seeing
the answer, not a dispatch, a flush and a fence (14 to 18 µs on the H200 before any work).

Safety: the kernel leaves by itself after IDLE_POLLS polls without a request, and the GL backend stops it
(`GLBackend.hold_resident`) before any other GPU work, transfer or wait it issues (compiling a program and
freeing a texture queue none), so nothing queued behind it waits on it and no kernel outlives the executor.
Never chosen on a CPU renderer (llvmpipe), whose threads the spinning group would take from the rest of the
machine; a GPU where it does not answer gets a dispatch a prompt again."""

import time
from dataclasses import dataclass, replace

import numpy as np

from ..constants import POISON_WORD, WRITTEN_ALPHA
from ..errors import PxglError
from ..gl import GLBackend
from ..kernel import SUBGROUP_EXTENSIONS, Constants, Kernel, Shared, Storage, Uniform, ceil_div
from .fused import FusedExecutor
from .fused_config import IDS, SMALL_SHARED, WEIGHTS, small_constants
from .fused_generation import GENERATE_THREADS, OUT_CACHE_ROWS, out_bytes, subgroups_fit
from .fused_loops import small_loops
from .protocol import largest_pow2_group, next_pow2


@dataclass(frozen=True)
class Mailbox:
    """Word offsets of the mailbox: the host writes the request's words, the GPU the answer's, each side in
    its own 256-byte block."""

    seq: int = 0
    length: int = 1
    ids: int = 2
    ack: int = 64
    prediction: int = 65
    exited: int = 66
    words: int = 128

    def constants(self) -> dict[str, int]:
        names = ("seq", "length", "ids", "ack", "prediction", "exited")
        return {f"MAILBOX_{name.upper()}": getattr(self, name) for name in names}


MAILBOX = Mailbox()
REQUEST_CONSTANTS = {"REQUEST_SEQ": 0, "REQUEST_LENGTH": 1, "REQUEST_IDS": 2}
"""Word offsets of the request's copy in shared memory (`request`), the kernel's own."""
STOP_SEQ = 0x7FFF_FFFF
"""The number that tells the kernel to leave; requests are numbered 1..STOP_SEQ - 1, round and round."""
IDLE_POLLS = 1 << 18
"""Mailbox polls without a request before the kernel leaves by itself (each a read of host memory over
the bus: about a quarter of a second on the H200, measured in bench/variants/resident.py)."""
TAG_POLLS = 1 << 12
"""Polls for a request's words to arrive whole once its number has."""
ANSWER_TIMEOUT_S = 1.0
"""How long the host waits for an answer before it stops the kernel (a forward pass takes microseconds)."""
POLLS_A_CLOCK = 4096
"""Polls of the answer between two looks at the clock."""
MAX_SPLIT = 64

FUSED_RESIDENT = Kernel(
    "fused_small",
    (
        *WEIGHTS,
        Storage("mailbox"),
        Storage("scratch"),
        Storage("out_bytes"),
        Uniform("served_seq"),
        Uniform("epoch"),
    ),
    shared=(*SMALL_SHARED, Shared("request", "uint", "REQUEST_WORDS")),
    loops=small_loops,  # a request's: its wait for requests is the exception (never on a CPU renderer)
)
FUSED_RESIDENT_SUBGROUPS = replace(FUSED_RESIDENT, extensions=SUBGROUP_EXTENSIONS)


def resident_constants(executor: FusedExecutor, threads: int, split: int) -> Constants | None:
    """fused_small's RESIDENT constants for `split` work groups of `threads` over the vocabulary, or None when
    a thread's output weights of its slice would not fit in registers (the resident path's premise: a
    prompt reads no output weight from memory)."""
    vocab4 = executor.constants.int("VOCAB_PAD") // 4
    if vocab4 % split:
        return None
    slice4 = vocab4 // split
    column_threads = min(next_pow2(slice4), threads)  # one round of columns, some lanes idle
    hidden_split = threads // column_threads
    if column_threads < slice4 or ceil_div(executor.spec.hidden[-1], hidden_split) > OUT_CACHE_ROWS:
        return None
    size = executor.gpu.limits.subgroup_size if executor.config.subgroups else 0
    subgroups = split == 1 and subgroups_fit(size, threads, column_threads)
    return (
        small_constants(executor.constants, IDS)
        | REQUEST_CONSTANTS
        | MAILBOX.constants()
        | {
            "RESIDENT": 1,
            "SPLIT": split,
            "SMALL_THREADS": threads,
            "COLUMN_THREADS": column_threads,
            "OUT_CACHED": 1,
            "SUBGROUP_SIZE": size if subgroups else 0,
            "REQUEST_WORDS": REQUEST_CONSTANTS["REQUEST_IDS"] + executor.spec.context_window,
            "STOP_SEQ": STOP_SEQ,
            "IDLE_POLLS": IDLE_POLLS,
            "TAG_POLLS": TAG_POLLS,
        }
    )


def resident_shape(executor: FusedExecutor) -> tuple[Kernel, Constants, int, int] | None:
    """The resident kernel, its constants, threads and work groups for this executor's model on its GPU, or
    None where it is not used: a CPU renderer, the configuration turning it off, or no shape whose output
    weights fit registers and whose shared memory fits the GPU. The split is the configuration's, else the
    smallest that fits (fewer groups recompute the hidden layers fewer times)."""
    gpu: GLBackend = executor.gpu
    config = executor.config
    if not config.resident or gpu.cpu_renderer or executor.spec.context_window > MAILBOX.ack - MAILBOX.ids:
        return None
    threads = largest_pow2_group(gpu, GENERATE_THREADS)
    splits = [config.resident_split] if config.resident_split else [1 << s for s in range(MAX_SPLIT.bit_length())]
    partials = config.small_max * config.split  # the executor's scratch holds this many groups' states
    for split in splits:
        constants = resident_constants(executor, threads, split)
        if constants is None or split > min(gpu.limits.max_work_group_count[0], partials):
            continue
        if FUSED_RESIDENT.shared_bytes(constants, threads) > gpu.limits.max_shared_memory:
            continue
        kernel = FUSED_RESIDENT_SUBGROUPS if constants.int("SUBGROUP_SIZE") else FUSED_RESIDENT
        return kernel, constants, threads, split
    return None


class ResidentPredictor:
    """The running kernel's host side: writes a request, launches the kernel when it is not running, polls
    the answer."""

    def __init__(self, executor: FusedExecutor, shape: tuple[Kernel, Constants, int, int]) -> None:
        kernel, constants, threads, split = shape
        self.gpu = gpu = executor.gpu
        self.program = gpu.program(kernel, constants, threads)
        self.groups = (split, 1, 1)
        self.scratch = executor.scratch
        self.mailbox = gpu.mapped_buffer(4 * MAILBOX.words, "resident mailbox")
        self.words = self.mailbox.view.view(np.uint32)
        self.words[:] = 0
        self.resources = executor.prepared.resources() | {
            "mailbox": self.mailbox,
            "scratch": executor.scratch,
            "out_bytes": out_bytes(executor),
        }
        self.slots = np.empty(executor.spec.context_window, np.uint32)
        self.seq = 0
        """The last request's number."""
        self.epoch = 0
        """The running dispatch's number (its exit word says which one left)."""
        self.running = False
        self.launches = 0

    def predict(self, ids: list[int]) -> int:
        """A prompt's last ≤ context_window ids, checked → its prediction word as the kernel wrote it. Raises
        PxglError when the kernel does not answer (a GPU that does not see the host's stores while a dispatch
        runs: GL does not promise it)."""
        words = self.words
        served = self.seq
        seq = self.seq = served % (STOP_SEQ - 1) + 1
        tag = (seq & 0xFFFF) << 16
        # Every slot of the window is written: a slot then holds no word older than the last request's, whose
        # tag differs from this one's (a slot left from 65,536 requests ago would carry this very tag).
        self.slots[:] = 0xFFFF  # never read: the kernel reads the request's length of them
        self.slots[: len(ids)] = ids
        words[MAILBOX.prediction] = POISON_WORD
        words[MAILBOX.ids : MAILBOX.ids + len(self.slots)] = self.slots | tag
        words[MAILBOX.length] = tag | len(ids)
        words[MAILBOX.seq] = seq
        if not self.running:
            self.launch(served)
        relaunched = False
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while time.monotonic() < deadline:
            for _ in range(POLLS_A_CLOCK):
                if words[MAILBOX.ack] == seq:
                    return int(words[MAILBOX.prediction])
                if words[MAILBOX.exited] == self.epoch and words[MAILBOX.ack] != seq:
                    # It left without answering: idle as the request arrived (a fresh dispatch takes it), or
                    # the request never reached it whole.
                    if relaunched:
                        deadline = 0.0
                        break
                    self.stop()
                    self.launch(served)
                    relaunched = True
        self.stop()
        raise PxglError(f"the GPU's resident kernel did not answer a prompt on {self.gpu.renderer}")

    def launch(self, served: int) -> None:
        """Dispatch the kernel, answering requests numbered other than `served` until it stops or idles."""
        gpu = self.gpu
        gpu.storage_barrier()  # stop() reset the arrival count
        self.epoch = self.epoch % (STOP_SEQ - 1) + 1
        gpu.run(self.program, self.groups, **self.resources, served_seq=served, epoch=self.epoch)
        gpu.flush()
        gpu.hold_resident(self.stop)
        self.running = True
        self.launches += 1

    def stop(self) -> None:
        """Tell the kernel to leave and wait until it has (it checks between requests)."""
        if not self.running:
            return
        self.running = False
        self.gpu.release_resident(self.stop)
        self.words[MAILBOX.seq] = STOP_SEQ
        self.gpu.wait_for_gpu()
        self.words[MAILBOX.seq] = self.seq
        # A kernel stopped between its groups' arrivals leaves a count the next fused_small dispatch would
        # merge by: the executor's scratch is shared with it.
        self.gpu.write_storage(self.scratch, np.zeros(1, np.uint32))

    def close(self) -> None:
        self.stop()
        self.gpu.release_mapped(self.mailbox)


class ResidentFusedExecutor(FusedExecutor):
    """The fused executor (fused.py) whose single prompts go to the resident kernel where it runs: the
    executor `fused` names."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resident: ResidentPredictor | None = None
        self._resident_decided = False

    @property
    def resident(self) -> ResidentPredictor | None:
        """The resident kernel's host side, once a prompt has chosen it."""
        return self._resident

    def run_one(self, ids: list[int]) -> np.ndarray:
        if not self._resident_decided:
            self._resident_decided = True
            shape = resident_shape(self)
            if shape is not None:
                try:
                    self._resident = ResidentPredictor(self, shape)
                except PxglError:  # its kernel does not compile here: a dispatch a prompt, as without it
                    self._resident = None
        if self._resident is None:
            return super().run_one(ids)
        try:
            word = self._resident.predict(ids)
        except PxglError:  # this GPU does not see the host's stores during a dispatch: never try it again
            self._resident.close()
            self._resident = None
            return super().run_one(ids)
        if word >> 24 != WRITTEN_ALPHA:  # the host checked these ids: a request read torn, or the kernel's
            return super().run_one(ids)  # subgroups not the compiled ones; a dispatch answers it instead
        return np.array((word & 255, (word >> 8) & 255, (word >> 16) & 255), np.uint8)

    def close(self) -> None:
        if self._resident is not None:
            self._resident.close()
        super().close()
