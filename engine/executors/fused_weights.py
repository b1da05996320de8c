"""The fused executor's prepared weights: the forward pass of docs/FORMATS.md §3 rearranged at load so each
prompt costs table reads where the model is linear in its tokens.

    FIRST  [slot][token][j]  embed[token] · layer0.weight rows of `slot` (mean: one slot, concat: W,
                             attention: CONCAT): the first layer's pre-activation is a sum of table rows
    HEAD   attention only: embed · query|key|value, pos · query|key|value, and the head's rows of layer0.weight
    DENSE  layers l ≥ 1, dequantized;  BIASES  every layer's, then out.bias padded;  OUT  out.weight padded

Everything here is computed on the GPU by two kernels compiled once per model and run with uniforms, and
kept in the on-disk cache (engine/cache.py) for the next engine of the same weights on the same GPU."""

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

from .. import cache
from ..errors import PxglError
from ..gl import Buffer, GLBackend, Texture
from ..kernel import Kernel, Sampler, Storage, Uniform, ceil_div
from ..resources import resource_dir
from ..spec import ModelSpec, Tensor
from .fused_loops import tables_loops
from .protocol import model_constants

FUSED_TABLES = Kernel(
    "fused_tables",
    (
        Sampler("weights"),
        Storage("dst"),
        *(Uniform(n) for n in ("a_offset", "a_scale", "a_zero", "b_offset", "b_scale", "b_zero")),
        *(Uniform(n) for n in ("rows", "n", "k", "b_row0", "at")),
    ),
    loops=tables_loops,
)
FUSED_DEQUANT = Kernel(
    "fused_dequant",
    (
        Sampler("weights"),
        Storage("dst"),
        *(Uniform(n) for n in ("t_offset", "t_scale", "t_zero", "rows", "cols", "dst_cols", "row0", "at")),
    ),
    loops=lambda c, size: 0,
)
PREPARE_GROUP = 64
PREPARE_SOURCES = ("fused_tables.comp", "fused_dequant.comp", "weights.glsl")
"""The shaders that compute the prepared weights: a cache entry is keyed by their text."""
CACHE_FORMAT = "pxgl fused prepared weights 1"
PREPARED_NAMES = ("first-layer token tables", "attention tables", "dense layers", "biases", "output weights")
MAX_GROUPS_PER_AXIS = 65535
"""GL guarantees this many work groups on each axis; bigger grids fold into a second axis."""
STAGE_MAX = 32
WINDOW_MAX = 512
"""The longest window fused runs: each invocation keeps its prompt's window of ids in a ring
(glsl/fused_common.glsl's own_ids[CONTEXT_WINDOW]); NVIDIA's compiler placed 512 and refused 4,096 ("cannot
locate suitable resource to bind variable own_ids", H100, driver 580, 2026-12-07)."""
"""Window tokens staged in shared memory at a time (the whole window when it is shorter); an attention
context must fit in one staging (its head reads every token of the window at once)."""
HEAD_TABLES = ("EQ", "EK", "EV", "PQ", "PK", "PV", "W0H")


def grid(groups: int) -> tuple[int, int, int]:
    """`groups` work groups as an (x, y, 1) grid within the per-axis limit (shaders flatten x + y * nx)."""
    x = min(groups, MAX_GROUPS_PER_AXIS)
    return x, ceil_div(groups, x), 1


@dataclass(frozen=True)
class WeightsLayout:
    """Where each part of the prepared weights sits (float offsets) and how large each buffer is."""

    slots: int
    """Context slots of the first layer's token tables."""
    first_floats: int
    head_at: dict[str, int]
    head_floats: int
    dense_at: tuple[int, ...]
    dense_floats: int
    bias_at: tuple[int, ...]
    out_bias_at: int
    bias_floats: int
    vocab_pad: int

    def constants(self) -> dict[str, int | tuple]:
        """What the fused kernels need to find each part (glsl/fused_common.glsl)."""
        return {
            "SLOTS": max(self.slots, 1),
            "LAYER_DENSE_AT": self.dense_at,
            "LAYER_BIAS_AT": self.bias_at,
            "OUT_BIAS_AT": self.out_bias_at,
            **{f"{name}_AT": at for name, at in self.head_at.items()},
        }


def first_slots(spec: ModelSpec) -> int:
    c = spec.context
    return {"mean": 1, "concat": c.window, "attention": c.concat}[c.mode]


def weights_layout(spec: ModelSpec, vocab_pad: int) -> WeightsLayout:
    a, c, v, h0 = spec.architecture, spec.context, spec.vocab_size, spec.hidden[0]
    slots = first_slots(spec)
    head_at: dict[str, int] = dict.fromkeys(HEAD_TABLES, 0)
    head_floats = 0
    if c.mode == "attention":
        sizes = [v * c.head_dim] * 3 + [c.window * c.head_dim] * 3 + [c.head_dim * h0]
        for name, size in zip(HEAD_TABLES, sizes, strict=True):
            head_at[name] = head_floats
            head_floats += size
    dense_at, dense_floats = [0], 0
    for n_in, n_out in a.layer_dims()[1:]:
        dense_at.append(dense_floats)
        dense_floats += n_in * n_out
    bias_at, bias_floats = [], 0
    for width in a.hidden:
        bias_at.append(bias_floats)
        bias_floats += width
    out_bias_at = bias_floats
    return WeightsLayout(
        slots,
        slots * v * h0,
        head_at,
        head_floats,
        tuple(dense_at),
        dense_floats,
        tuple(bias_at),
        out_bias_at,
        out_bias_at + vocab_pad,
        vocab_pad,
    )


def supports(spec: ModelSpec, gpu: GLBackend | None = None) -> str | None:
    """None when the fused executor runs this model (docs/FORMATS.md §3.1, the fused envelope; its loops are
    fused_config.loop_refusal's), else why not: an attention window longer than STAGE_MAX, any window longer
    than WINDOW_MAX, or prepared tables past the GPU's storage buffer limit."""
    c = spec.context
    if c.mode == "attention" and c.window > STAGE_MAX:
        return f"the fused executor attends over windows of at most {STAGE_MAX} tokens, not {c.window}"
    if c.window > WINDOW_MAX:
        return f"the fused executor reads windows of at most {WINDOW_MAX} tokens, not {c.window}"
    if gpu is not None:
        layout = weights_layout(spec, spec.vocab_size + 512)
        largest = 4 * max(layout.first_floats, layout.head_floats, layout.dense_floats, layout.bias_floats)
        largest = max(largest, 4 * spec.hidden[-1] * layout.vocab_pad)
        if largest > gpu.limits.max_storage_block_size:
            return (
                f"the fused executor's prepared tables for this model take {largest:,} bytes, past this GPU's "
                f"storage buffer limit of {gpu.limits.max_storage_block_size:,}"
            )
    return None


def check_envelope(spec: ModelSpec, gpu: GLBackend) -> None:
    reason = supports(spec, gpu)
    if reason is not None:
        raise PxglError(f"{reason}; the passes and pxvm executors run every family member")


@dataclass(frozen=True)
class PreparedWeights:
    first: Buffer
    head: Buffer
    dense: Buffer
    biases: Buffer
    out_weights: Buffer

    def buffers(self) -> tuple[Buffer, ...]:
        return (self.first, self.head, self.dense, self.biases, self.out_weights)

    def resources(self) -> dict[str, Buffer]:
        """The fused kernels' weight resources by name."""
        return {
            "first": self.first,
            "head": self.head,
            "dense": self.dense,
            "biases": self.biases,
            "out_weights": self.out_weights,
        }


def quantization(tensor: Tensor, prefix: str) -> dict[str, int | float]:
    return {
        f"{prefix}_offset": tensor.offset,
        f"{prefix}_scale": tensor.scale,
        f"{prefix}_zero": float(tensor.zero_point),
    }


def cached_weights(gpu: GLBackend, spec: ModelSpec, weights: Texture, layout: WeightsLayout) -> PreparedWeights:
    """The prepared buffers, from the on-disk cache (engine/cache.py) when an entry for exactly these weights,
    this layout, these shaders and this GPU and driver is there, else computed and then kept there."""
    if cache.cache_dir() is None:
        return prepare_weights(gpu, spec, weights, layout)
    glsl = resource_dir("glsl")
    sources = [(glsl / name).read_text(encoding="utf-8") for name in PREPARE_SOURCES]
    constants = sorted((model_constants(spec) | layout.constants()).items())
    key = cache.entry_key(
        CACHE_FORMAT,
        gpu.renderer,
        gpu.version,
        *sources,
        repr(constants),
        f"vocab_pad={layout.vocab_pad}",
        gpu.read_uint8(weights).tobytes(),
    )
    sizes = [4 * max(floats, 1) for floats in layout_floats(spec, layout)]
    starts = list(accumulate(sizes, initial=0))
    buffers: list[Buffer] = []

    def write(at: int, chunk: memoryview) -> None:  # the entry is the buffers one after another
        if not buffers:  # made once an entry is read: a miss allocates nothing
            buffers.extend(gpu.storage_buffer(size, what) for size, what in zip(sizes, PREPARED_NAMES, strict=True))
        while chunk:
            index = bisect_right(starts, at) - 1
            part = chunk[: starts[index + 1] - at]
            gpu.write_storage(buffers[index], part, at - starts[index])
            chunk, at = chunk[len(part) :], at + len(part)

    if cache.load(key, sum(sizes), write):
        return PreparedWeights(*buffers)
    for buffer in buffers:
        gpu.release_storage(buffer)
    buffers.clear()
    prepared = prepare_weights(gpu, spec, weights, layout)
    data = b"".join(gpu.read_storage(b, size) for b, size in zip(prepared.buffers(), sizes, strict=True))
    model = spec.tokenizer.removesuffix(".json").removesuffix(".tokenizer")  # the name it was written under
    cache.store(key, data, {"model": model, "architecture": spec.architecture.describe(), "renderer": gpu.renderer})
    # A buffer the host has read back may be moved to host memory by the driver (NVIDIA's did: every fused
    # kernel of an engine whose weights had just been computed and cached ran ~8x slower on the H200, its
    # weights read over the bus). The engine runs from fresh buffers that are only ever written.
    for buffer in prepared.buffers():
        gpu.release_storage(buffer)
    write(0, memoryview(data))
    return PreparedWeights(*buffers)


def layout_floats(spec: ModelSpec, layout: WeightsLayout) -> tuple[int, ...]:
    """Floats of each prepared buffer, in PreparedWeights' order."""
    return (
        layout.first_floats,
        layout.head_floats,
        layout.dense_floats,
        layout.bias_floats,
        spec.hidden[-1] * layout.vocab_pad,
    )


def prepare_weights(gpu: GLBackend, spec: ModelSpec, weights: Texture, layout: WeightsLayout) -> PreparedWeights:
    """Every prepared buffer, computed on the GPU from the weight texture (then a storage barrier)."""
    a, c, t = spec.architecture, spec.context, spec.tensors
    e, v, h0 = spec.embed_dim, spec.vocab_size, spec.hidden[0]
    constants = model_constants(spec)
    tables = gpu.program(FUSED_TABLES, constants, PREPARE_GROUP)
    dequant = gpu.program(FUSED_DEQUANT, constants, PREPARE_GROUP)

    def buffer(floats: int, what: str) -> Buffer:
        return gpu.storage_buffer(4 * max(floats, 1), what)

    prepared = PreparedWeights(
        *(buffer(n, what) for n, what in zip(layout_floats(spec, layout), PREPARED_NAMES, strict=True))
    )

    def product(dst: Buffer, at: int, a_tensor: Tensor, b_tensor: Tensor, rows: int, n: int, k: int, row0: int) -> None:
        gpu.run(
            tables,
            grid(ceil_div(rows * n, PREPARE_GROUP)),
            weights=weights,
            dst=dst,
            **quantization(a_tensor, "a"),
            **quantization(b_tensor, "b"),
            rows=rows,
            n=n,
            k=k,
            b_row0=row0,
            at=at,
        )

    def copy(dst: Buffer, at: int, tensor: Tensor, rows: int, cols: int, dst_cols: int, row0: int = 0) -> None:
        groups = grid(ceil_div(rows * dst_cols, PREPARE_GROUP))
        gpu.run(
            dequant, groups, weights=weights, dst=dst, **quantization(tensor, "t"), rows=rows, cols=cols,
            dst_cols=dst_cols, row0=row0, at=at,
        )  # fmt: skip

    for slot in range(layout.slots):
        product(prepared.first, slot * v * h0, t["embed"], t["layer0.weight"], v, h0, e, slot * e)
    if c.mode == "attention":
        d, at = c.head_dim, layout.head_at
        for name, projection in zip("QKV", ("attn.query", "attn.key", "attn.value"), strict=True):
            product(prepared.head, at[f"E{name}"], t["embed"], t[projection], v, d, e, 0)
            product(prepared.head, at[f"P{name}"], t["attn.pos"], t[projection], c.window, d, e, 0)
        copy(prepared.head, at["W0H"], t["layer0.weight"], d, h0, h0, c.concat * e)
    for layer, (n_in, n_out) in enumerate(a.layer_dims()):
        if layer:
            copy(prepared.dense, layout.dense_at[layer], t[f"layer{layer}.weight"], n_in, n_out, n_out)
        copy(prepared.biases, layout.bias_at[layer], t[f"layer{layer}.bias"], 1, n_out, n_out)
    copy(prepared.biases, layout.out_bias_at, t["out.bias"], 1, v, layout.vocab_pad)
    copy(prepared.out_weights, 0, t["out.weight"], spec.hidden[-1], v, layout.vocab_pad)
    gpu.storage_barrier()
    return prepared
