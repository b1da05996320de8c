"""GPU programs as declarations: which shader, which resources it binds (by name), which shared arrays it
declares, which extensions it needs. No GL here: engine/gl compiles a Kernel once into a handle and runs it
with its resources named (TensorFlow.js WebGL programs and tinygrad's compile → program → call are the
models).

Every kernel declares its loops: how many loop iterations one invocation may run, from the constants it is
compiled with and its local size (a uniform's worst case where one bounds a loop). engine/gl refuses to
compile a kernel past DISPATCH_LOOPS, so no dispatch can be silently cut short (docs/FORMATS.md §3.1); an
executor whose work would loop longer splits it into parts first.

Binding points are numbered here, per resource kind, in declaration order, and reach the shader as
#defines (`BINDING_<NAME>`); shared arrays are declared here with their lengths' constant names and written
into the shader's source, so the bytes they take are computed from the same declaration that makes them."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

SHARED_TYPE_BYTES = {"float": 4, "int": 4, "uint": 4, "bool": 4, "vec4": 16}
DISPATCH_LOOPS = 56 << 10
"""Loop iterations one invocation may run in one dispatch, every loop counted (nested ones each iteration):
Mesa's llvmpipe silently ends an invocation's loops after 65,535 iterations in all (measured:
tests/test_loop_limits.py's probe; NVIDIA's runs 1 M); 7/8 of it leaves margin for the loops a count omits
(a loop's exit test, a helper's constant loop). The same on every driver: a model splits and refuses alike
everywhere, and a split sum keeps its order."""


@dataclass(frozen=True)
class Sampler:
    """An integer texture read with texelFetch (usampler2D)."""

    name: str


@dataclass(frozen=True)
class Image:
    """A texture read and/or written with imageLoad/imageStore, bound with an explicit format."""

    name: str
    format: str
    """"r32f" or "rgba8ui"."""
    read: bool = False
    write: bool = False


@dataclass(frozen=True)
class Storage:
    """A shader storage buffer (std430): a Buffer, a MappedBuffer or a BufferRange."""

    name: str


@dataclass(frozen=True)
class Uniform:
    """A uniform variable (int or float) of the shader, set by name at each run: for kernels dispatched
    several times over different parts of the same data, compiled once."""

    name: str


Resource = Sampler | Image | Storage | Uniform


@dataclass(frozen=True)
class Shared:
    """A shared array: `type name[length]`, length a number or the name of a constant of the compile."""

    name: str
    type: str
    length: str | int


LoopCount = Callable[["Constants", int], int]
"""(constants, local size) → the most loop iterations one invocation of a kernel runs."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def log2(n: int) -> int:
    """Steps of a tree reduction over n (a power of two) invocations."""
    return n.bit_length() - 1


@dataclass(frozen=True, eq=False)
class Kernel:
    """glsl/<shader>.comp and everything the GL layer needs to compile and bind it. Compared by identity:
    kernels are module-level declarations."""

    shader: str
    resources: tuple[Resource, ...]
    shared: tuple[Shared, ...] = ()
    extensions: tuple[str, ...] = ()
    loops: LoopCount = field(kw_only=True)
    """The most loop iterations one invocation runs, compiled with these constants and local size."""
    bindings: dict[str, int] = field(init=False, repr=False)
    """Binding point of each bound resource (uniforms have none)."""

    def __post_init__(self) -> None:
        bindings: dict[str, int] = {}
        counts: dict[type, int] = {}
        names = [resource.name for resource in self.resources]
        if len(set(names)) != len(names):
            raise ValueError(f"kernel {self.shader}: a resource is declared twice in {names}")
        for resource in self.resources:
            if type(resource) is not Uniform:
                bindings[resource.name] = counts.get(type(resource), 0)
                counts[type(resource)] = bindings[resource.name] + 1
        object.__setattr__(self, "bindings", bindings)

    def binding_defines(self) -> dict[str, int]:
        return {f"BINDING_{name.upper()}": binding for name, binding in self.bindings.items()}

    def shared_bytes(self, constants: Mapping[str, int | float], local_size: int) -> int:
        """Bytes of shared memory a work group of this kernel declares, compiled with these constants and
        local size (a length may be any constant's name, LOCAL_SIZE included)."""
        lengths = {**constants, "LOCAL_SIZE": local_size}
        return sum(
            SHARED_TYPE_BYTES[s.type] * (s.length if isinstance(s.length, int) else int(lengths[s.length]))
            for s in self.shared
        )


class Constants(Mapping[str, int | float]):
    """The constants a kernel is compiled with (the model's, the executor's): an immutable mapping whose
    hash is computed once, so looking a compiled program up by it costs less than a dispatch."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, int | float] = {}) -> None:
        self._items = dict(items)
        self._hash = hash(tuple(sorted(self._items.items())))

    def __getitem__(self, name: str) -> int | float:
        return self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constants) and self._hash == other._hash and self._items == other._items

    def __or__(self, other: Mapping[str, int | float]) -> "Constants":
        return Constants({**self._items, **other})

    def int(self, name: str) -> int:
        return int(self._items[name])


SUBGROUP_EXTENSIONS = ("GL_KHR_shader_subgroup_basic", "GL_KHR_shader_subgroup_shuffle")
"""What a kernel using subgroup shuffles enables; engine/gl's Limits.subgroup_size says whether a GPU has them."""

TOP1_SOFTMAX_SHARED = (
    Shared("top1_value", "float", "LOCAL_SIZE"),
    Shared("top1_index", "int", "LOCAL_SIZE"),
    Shared("top1_sum", "float", "LOCAL_SIZE"),
)
"""The shared arrays glsl/top1_softmax.glsl reduces through: a kernel including it declares these."""


def top1_loops(length: int, local_size: int) -> int:
    """glsl/top1_softmax.glsl's loops over `length` values: two strided scans, two tree reductions."""
    return 2 * (ceil_div(length, local_size) + 1) + 2 * (log2(local_size) + 1)
