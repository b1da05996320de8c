"""Model A: the forward pass (docs/FORMATS.md §3) as GLSL compute passes over textures, for every member of
the pixellm family.

    tokens ─(attend_query ─▶ attend_keyed ─▶ attend_scores ─▶ T_scores ─▶ attend_softmax ─▶ attend_mix)─┐
    tokens ──────────────────────────────────────────────context──▶ T_context ──dense──▶ T_hidden[0] ── …
                                           ──dense──▶ T_hidden[L-1] ──logits──▶ T_logits ──argmax──▶ prediction

Each pass is a declared kernel whose invocations loop within DISPATCH_LOOPS for every family member
(docs/FORMATS.md §3.1): the attention head in passes of one vector each (glsl/attention.glsl), a dense
layer's sum past DENSE_PART_TERMS in parts, one dispatch each. `dense` is one shader compiled once per layer.
Every texture stays on the GPU until a trace reads it back."""

from dataclasses import dataclass

import numpy as np

from ..constants import MAX_TILE, POISON_BYTE
from ..errors import PxglError
from ..gl import GLBackend, GpuProgram, Texture
from ..kernel import (
    DISPATCH_LOOPS,
    TOP1_SOFTMAX_SHARED,
    Constants,
    Image,
    Kernel,
    Sampler,
    Shared,
    Uniform,
    ceil_div,
    log2,
    top1_loops,
)
from ..spec import ModelSpec
from .protocol import (
    POISON_FLOAT,
    ExecutorInputs,
    Trace,
    check_no_tuning,
    largest_pow2_group,
    model_constants,
    next_pow2,
    tensor_constants,
    written_predictions,
)


def token_loops(c: Constants) -> int:
    """glsl/tails.glsl's token_count: one iteration a token of the window, and its exit test."""
    return int(c["CONTEXT_WINDOW"]) + 1


def _int(c: Constants, name: str) -> int:
    return int(c[name])


ATTEND_QUERY = Kernel(
    "attend_query",
    (Sampler("weights"), Sampler("tokens"), Image("query_out", "r32f", write=True)),
    loops=lambda c, _: token_loops(c) + _int(c, "EMBED_DIM"),
)
ATTEND_KEYED = Kernel(
    "attend_keyed",
    (Sampler("weights"), Image("query_in", "r32f", read=True), Image("keyed_out", "r32f", write=True)),
    loops=lambda c, _: _int(c, "HEAD_DIM"),
)
ATTEND_SCORES = Kernel(
    "attend_scores",
    (
        Sampler("weights"),
        Sampler("tokens"),
        Image("keyed_in", "r32f", read=True),
        Image("scores_out", "r32f", write=True),
    ),
    loops=lambda c, _: token_loops(c) + _int(c, "EMBED_DIM"),
)
ATTEND_SOFTMAX = Kernel(
    "attend_softmax",
    (Sampler("tokens"), Image("scores_in", "r32f", read=True), Image("attention_out", "r32f", write=True)),
    shared=(Shared("reduced", "float", "LOCAL_SIZE"),),
    loops=lambda c, size: token_loops(c) + 3 * (ceil_div(_int(c, "CONTEXT_WINDOW"), size) + 1) + 2 * (log2(size) + 1),
)
ATTEND_MIX = Kernel(
    "attend_mix",
    (
        Sampler("weights"),
        Sampler("tokens"),
        Image("attention_in", "r32f", read=True),
        Image("mixed_out", "r32f", write=True),
    ),
    loops=lambda c, _: 2 * token_loops(c),
)
CONTEXT = Kernel(
    "context",
    (Sampler("weights"), Sampler("tokens"), Image("x_out", "r32f", write=True)),
    loops=lambda c, _: 2 * token_loops(c),  # mean: the count, then the sum; concat: the count alone
)
CONTEXT_ATTENTION = Kernel(
    "context",
    (
        Sampler("weights"),
        Sampler("tokens"),
        Image("x_out", "r32f", write=True),
        Image("mixed_in", "r32f", read=True),
    ),
    loops=lambda c, _: token_loops(c) + _int(c, "EMBED_DIM"),
)
DENSE = Kernel(
    "dense",
    (
        Sampler("weights"),
        Image("vector_in", "r32f", read=True),
        Image("vector_out", "r32f", read=True, write=True),
        Uniform("part"),
    ),
    loops=lambda c, _: min(_int(c, "IN_DIM"), _int(c, "PART_TERMS")) + 1,
)
LOGITS = Kernel(
    "logits",
    (Sampler("weights"), Image("hidden_in", "r32f", read=True), Image("logits_out", "r32f", write=True)),
    loops=lambda c, _: _int(c, "LAST_HIDDEN") + 1,
)
ARGMAX = Kernel(
    "argmax",
    (Image("logits_in", "r32f", read=True), Image("prediction_out", "rgba8ui", write=True)),
    shared=TOP1_SOFTMAX_SHARED,
    loops=lambda c, size: top1_loops(_int(c, "VOCAB"), size),
)
SCORE = Kernel(
    "score",
    (Image("logits_in", "r32f", read=True), Sampler("targets"), Image("logprobs_out", "r32f", write=True)),
    shared=TOP1_SOFTMAX_SHARED,
    loops=lambda c, size: top1_loops(_int(c, "VOCAB"), size),
)
DENSE_PART_TERMS = DISPATCH_LOOPS - 1
"""Terms of a dense layer's sum one dispatch adds (glsl/dense.comp's parts)."""
GROUP = 64
ARGMAX_MAX_THREADS = 256


@dataclass(frozen=True)
class VectorLayout:
    """A per-prompt vector in an r32f texture: `width` texels a row, `rows` rows a prompt (vectors.glsl)."""

    length: int
    width: int
    rows: int


@dataclass(frozen=True)
class AttentionPrograms:
    """The attention head's passes, in the order they run (glsl/attention.glsl)."""

    query: GpuProgram
    keyed: GpuProgram
    scores: GpuProgram
    softmax: GpuProgram
    mix: GpuProgram


@dataclass(frozen=True)
class PassPrograms:
    constants: Constants
    context_layout: VectorLayout
    attention: AttentionPrograms | None
    context: GpuProgram
    dense: tuple[GpuProgram, ...]
    dense_parts: tuple[int, ...]
    """Dispatches each layer's sum runs in (DENSE_PART_TERMS terms each)."""
    logits: GpuProgram
    argmax: GpuProgram
    score: GpuProgram


def vector_layout(length: int, max_side: int) -> VectorLayout:
    width = min(length, max_side)
    return VectorLayout(length, width, ceil_div(length, width))


def compile_passes(gpu: GLBackend, spec: ModelSpec) -> PassPrograms:
    grid = gpu.limits.max_texture_size // spec.logits_side
    x = vector_layout(spec.context_dim, gpu.limits.max_texture_size)
    constants = model_constants(spec) | {"LOGITS_GRID": grid, "X_WIDTH": x.width, "X_ROWS": x.rows}
    architecture = spec.architecture

    def group(n: int, most: int = GROUP) -> int:
        return largest_pow2_group(gpu, min(most, next_pow2(n)))

    attention = None
    if spec.context.mode == "attention":
        window, embed = spec.context_window, spec.embed_dim
        attention = AttentionPrograms(
            query=gpu.program(ATTEND_QUERY, constants, group(spec.context.head_dim)),
            keyed=gpu.program(ATTEND_KEYED, constants, group(embed)),
            scores=gpu.program(ATTEND_SCORES, constants, group(window)),
            softmax=gpu.program(ATTEND_SOFTMAX, constants, group(window, ARGMAX_MAX_THREADS)),
            mix=gpu.program(ATTEND_MIX, constants, group(embed)),
        )
    context = gpu.program(CONTEXT_ATTENTION if attention else CONTEXT, constants, group(spec.context_dim))
    dense, parts = [], []
    for layer, (n_in, n_out) in enumerate(architecture.layer_dims()):
        source = x if layer == 0 else VectorLayout(n_in, n_in, 1)
        parts.append(ceil_div(n_in, DENSE_PART_TERMS))
        layer_constants = constants | {
            "IN_DIM": n_in,
            "OUT_DIM": n_out,
            "IN_WIDTH": source.width,
            "IN_ROWS": source.rows,
            "PART_TERMS": DENSE_PART_TERMS,
            "PARTS": parts[-1],
            "RESIDUAL": int(architecture.is_residual(layer)),
            **tensor_constants(spec.tensors[f"layer{layer}.weight"], "DENSE_WEIGHT"),
            **tensor_constants(spec.tensors[f"layer{layer}.bias"], "DENSE_BIAS"),
        }
        dense.append(gpu.program(DENSE, layer_constants, group(n_out)))
    return PassPrograms(
        constants,
        x,
        attention,
        context,
        tuple(dense),
        tuple(parts),
        gpu.program(LOGITS, constants, group(spec.vocab_size)),
        gpu.program(ARGMAX, constants, group(spec.vocab_size, ARGMAX_MAX_THREADS)),
        gpu.program(SCORE, constants, group(spec.vocab_size, ARGMAX_MAX_THREADS)),
    )


@dataclass(frozen=True)
class Activations:
    """The textures of one tile: room for `capacity` prompts (rows, or logits cells)."""

    capacity: int
    tokens: Texture
    head: tuple[Texture, ...]
    """The attention head's: T_query, T_keyed, T_scores, T_attention, T_mixed (none without attention)."""
    context: Texture
    hidden: tuple[Texture, ...]
    logits: Texture
    prediction: Texture
    targets: Texture
    """Scoring: each prompt's target token as a pixel."""
    logprobs: Texture
    """Scoring: log p(target) of each prompt."""

    @property
    def scores(self) -> Texture | None:
        return self.head[2] if self.head else None

    def textures(self) -> list[Texture]:
        scoring = [self.targets, self.logprobs]
        return [self.tokens, *self.head, self.context, *self.hidden, self.logits, self.prediction, *scoring]


def poison(gpu: GLBackend, act: Activations) -> None:
    for texture in act.textures():
        if texture.dtype == "f4":
            gpu.write(texture, np.full((texture.height, texture.width), POISON_FLOAT, dtype=np.float32))
    gpu.write(act.prediction, np.full((act.capacity, 1, 4), POISON_BYTE, dtype=np.uint8))


def allocate_activations(gpu: GLBackend, spec: ModelSpec, programs: PassPrograms, capacity: int) -> Activations:
    c = programs.constants
    side, grid, x = c.int("LOGITS_SIDE"), c.int("LOGITS_GRID"), programs.context_layout
    head: tuple[Texture, ...] = ()
    if programs.attention is not None:
        window, embed = spec.context_window, spec.embed_dim
        widths = {"T_query": spec.context.head_dim, "T_keyed": embed, "T_scores": window}
        widths |= {"T_attention": window, "T_mixed": embed}
        head = tuple(gpu.float_image(width, capacity, name) for name, width in widths.items())
    act = Activations(
        capacity=capacity,
        tokens=gpu.uint_texture_empty(spec.context_window, capacity, 3, "token texture"),
        head=head,
        context=gpu.float_image(x.width, capacity * x.rows, "T_context"),
        hidden=tuple(gpu.float_image(width, capacity, f"T_hidden[{i}]") for i, width in enumerate(spec.hidden)),
        logits=gpu.float_image(min(capacity, grid) * side, ceil_div(capacity, grid) * side, "T_logits"),
        prediction=gpu.rgba8ui_image(1, capacity, "prediction"),
        targets=gpu.uint_texture_empty(1, capacity, 3, "targets"),
        logprobs=gpu.float_image(1, capacity, "T_logprobs"),
    )
    poison(gpu, act)
    return act


def columns(program: GpuProgram, width: int, n: int) -> tuple[int, int, int]:
    """Work groups covering `width` columns for each of `n` prompts."""
    return ceil_div(width, program.local_size), n, 1


def attend(gpu: GLBackend, spec: ModelSpec, a: AttentionPrograms, weights: Texture, act: Activations, n: int) -> None:
    """The attention head's passes, T_query to T_mixed, a barrier after each."""
    query, keyed, scores, attention, mixed = act.head
    window, embed, tokens = spec.context_window, spec.embed_dim, act.tokens
    gpu.run(a.query, columns(a.query, spec.context.head_dim, n), weights=weights, tokens=tokens, query_out=query)
    gpu.barrier()
    gpu.run(a.keyed, columns(a.keyed, embed, n), weights=weights, query_in=query, keyed_out=keyed)
    gpu.barrier()
    gpu.run(a.scores, columns(a.scores, window, n), weights=weights, tokens=tokens, keyed_in=keyed, scores_out=scores)
    gpu.barrier()
    gpu.run(a.softmax, (n, 1, 1), tokens=tokens, scores_in=scores, attention_out=attention)
    gpu.barrier()
    gpu.run(a.mix, columns(a.mix, embed, n), weights=weights, tokens=tokens, attention_in=attention, mixed_out=mixed)
    gpu.barrier()


def context(gpu: GLBackend, spec: ModelSpec, p: PassPrograms, weights: Texture, act: Activations, n: int) -> None:
    """T_context (and, for an attention context, the head's passes first) from the token texture."""
    groups = columns(p.context, spec.context_dim, n)
    if p.attention is not None:
        attend(gpu, spec, p.attention, weights, act, n)
        gpu.run(p.context, groups, weights=weights, tokens=act.tokens, x_out=act.context, mixed_in=act.head[-1])
    else:
        gpu.run(p.context, groups, weights=weights, tokens=act.tokens, x_out=act.context)


def dense(gpu: GLBackend, p: PassPrograms, layer: int, weights: Texture, source: Texture, out: Texture, n: int) -> None:
    """Hidden layer `layer`: T_hidden[layer] from its input (T_context or the layer before), its sum in
    p.dense_parts[layer] dispatches, each adding to what the one before stored."""
    program = p.dense[layer]
    for part in range(p.dense_parts[layer]):
        if part:
            gpu.barrier()
        gpu.run(program, columns(program, out.width, n), weights=weights, vector_in=source, vector_out=out, part=part)


def logits(gpu: GLBackend, p: PassPrograms, weights: Texture, hidden: Texture, logits_out: Texture, n: int) -> None:
    groups = columns(p.logits, p.constants.int("VOCAB"), n)
    gpu.run(p.logits, groups, weights=weights, hidden_in=hidden, logits_out=logits_out)


def argmax(gpu: GLBackend, p: PassPrograms, logits_in: Texture, prediction: Texture, n: int) -> None:
    gpu.run(p.argmax, (n, 1, 1), logits_in=logits_in, prediction_out=prediction)


def forward(gpu: GLBackend, spec: ModelSpec, p: PassPrograms, weights: Texture, act: Activations, n: int) -> None:
    """Every pass over the first n prompts of the tile, a memory barrier between each."""
    context(gpu, spec, p, weights, act, n)
    gpu.barrier()
    source = act.context
    for layer, out in enumerate(act.hidden):
        dense(gpu, p, layer, weights, source, out, n)
        gpu.barrier()
        source = out
    logits(gpu, p, weights, source, act.logits, n)
    gpu.barrier()
    argmax(gpu, p, act.logits, act.prediction, n)
    gpu.barrier()


def logits_cells(texture: np.ndarray, n: int, side: int, grid: int) -> np.ndarray:
    """(n, side, side): each prompt's cell of a T_logits texture read back (layout: glsl/logits_grid.glsl)."""
    rows, cols = ceil_div(n, grid), min(n, grid)
    cells = texture[: rows * side, : cols * side].reshape(rows, side, cols, side).transpose(0, 2, 1, 3)
    return cells.reshape(rows * cols, side, side)[:n]


def read_vectors(gpu: GLBackend, texture: Texture, layout: VectorLayout, n: int) -> np.ndarray:
    """(n, length) float32: each prompt's vector read back from its layout."""
    image = gpu.read_float(texture)[: n * layout.rows]
    return image.reshape(n, layout.rows * layout.width)[:, : layout.length]


class PassesExecutor:
    """Model A: the passes, with one set of activation textures per tile capacity (powers of two)."""

    def __init__(self, gpu: GLBackend, inputs: ExecutorInputs, tuning: None = None) -> None:
        check_no_tuning("passes", tuning)
        self.gpu, self.spec, self.weights = gpu, inputs.spec, inputs.weights
        self.programs = compile_passes(gpu, self.spec)
        grid = self.programs.constants.int("LOGITS_GRID")
        limits = gpu.limits
        by_rows = limits.max_texture_size // self.programs.context_layout.rows
        self.max_tile = min(MAX_TILE, by_rows, *limits.max_work_group_count[:2], grid * grid)
        if self.max_tile < 1:
            raise PxglError(f"passes executor: a context of {self.spec.context_dim} floats does not fit this GPU")
        self._tiles: dict[int, Activations] = {}

    def activations(self, n: int) -> Activations:
        capacity = min(next_pow2(n), self.max_tile)
        if capacity not in self._tiles:
            self._tiles[capacity] = allocate_activations(self.gpu, self.spec, self.programs, capacity)
        return self._tiles[capacity]

    def _forward(self, tails: np.ndarray) -> Activations:
        act = self.activations(len(tails))
        self.gpu.write(act.tokens, tails)
        forward(self.gpu, self.spec, self.programs, self.weights, act, len(tails))
        return act

    def run(self, tails: np.ndarray) -> np.ndarray:
        act = self._forward(tails)
        return written_predictions(self.gpu.read_uint8(act.prediction)[: len(tails)])[:, 0]

    def score(self, tails: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, context_window, 3) token rows (a row may be empty: an empty context) and (n,) target ids →
        (n, 3) prediction pixels and (n,) float32 log p(target) (docs/FORMATS.md §9)."""
        n = len(tails)
        act = self.activations(n)
        target_pixels = np.zeros((n, 1, 3), np.uint8)
        target_pixels[:, 0, 0], target_pixels[:, 0, 1] = targets % 256, targets // 256
        self.gpu.write(act.targets, target_pixels)
        act = self._forward(tails)
        self.gpu.run(
            self.programs.score, (n, 1, 1), logits_in=act.logits, targets=act.targets, logprobs_out=act.logprobs
        )
        self.gpu.barrier()
        pixels = written_predictions(self.gpu.read_uint8(act.prediction)[:n])[:, 0]
        return pixels, self.gpu.read_float(act.logprobs)[:n, 0].copy()

    def trace(self, tails: np.ndarray) -> Trace:
        act, n = self._forward(tails), len(tails)
        grid = self.programs.constants.int("LOGITS_GRID")
        scores = None if act.scores is None else self.gpu.read_float(act.scores)[:n]
        return Trace(
            tokens=self.gpu.read_uint8(act.tokens)[:n],
            context=read_vectors(self.gpu, act.context, self.programs.context_layout, n),
            hidden=tuple(self.gpu.read_float(texture)[:n] for texture in act.hidden),
            logits=logits_cells(self.gpu.read_float(act.logits), n, self.spec.logits_side, grid),
            prediction=written_predictions(self.gpu.read_uint8(act.prediction)[:n]),
            scores=scores,
        )

    def poison(self) -> None:
        for act in self._tiles.values():
            poison(self.gpu, act)

    def close(self) -> None:
        for act in self._tiles.values():
            for texture in act.textures():
                texture.release()
        self._tiles.clear()
