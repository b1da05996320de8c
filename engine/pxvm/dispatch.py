"""How many loop iterations glsl/pxvm.comp takes per invocation, and the dispatches that keep every one
within what every driver runs (docs/FORMATS.md §7.5): Mesa's llvmpipe ends a shader invocation's loops
after 65,535 iterations in all, so a long program is walked in segments of instructions, and one long
instruction in parts of its elements (and of DOT_PRODUCT's sum), one dispatch each."""

from dataclasses import dataclass

from ..errors import PxglError
from ..kernel import DISPATCH_LOOPS, ceil_div
from .opcodes import HEADER_PIXELS
from .program import Instruction, Program

VM_THREADS = 256
"""Invocations per work group: every OpenGL 4.3 GPU allows 1,024, so the interpreter always has 256."""
WALK_LOOPS = 32
"""Loop iterations the walk itself costs an instruction (measured ≈ 25 on llvmpipe)."""
ALL = (1 << 31) - 1
"""A range end that holds every element: what an unsplit instruction runs."""
ELEMENTWISE = frozenset({"LOAD_WEIGHT_SLICE", "LOAD_TOKEN", "ADD_BIAS", "RELU", "CONCAT_TOKENS", "POOL_TOKENS"})
"""Opcodes whose outer loop over elements may be split: each element is computed whole by one invocation."""


@dataclass(frozen=True)
class Dispatch:
    """One run of the interpreter: the instructions whose header pixels lie in [pc_begin, pc_end), each
    computing only its elements [item_begin, item_end) and DOT_PRODUCT's sum terms [term_begin, term_end)
    (other opcodes ignore the terms)."""

    pc_begin: int
    pc_end: int
    item_begin: int = 0
    item_end: int = ALL
    term_begin: int = 0
    term_end: int = ALL


def scan_loops(window: int) -> int:
    """What every dispatch costs before the walk: counting the prompt's tokens."""
    return window + 1


def elements(ins: Instruction) -> int:
    """The length of an instruction's outer loop over the elements it writes."""
    if ins.op.name == "DOT_PRODUCT":
        return ins["out_len"]
    if ins.op.name == "CONCAT_TOKENS":
        return ins["count"] * ins["length"]
    return ins["length"]


def element_loops(ins: Instruction, window: int, terms: int) -> int:
    """Loop iterations one element of a splittable instruction costs, with `terms` of a DOT_PRODUCT sum."""
    if ins.op.name == "DOT_PRODUCT":
        return terms + 2
    if ins.op.name == "POOL_TOKENS":
        return window + 2
    return 1


def part_loops(ins: Instruction, window: int, items: int, terms: int, threads: int) -> int:
    """Iterations one invocation takes for `items` elements (and `terms` sum terms) of a splittable one."""
    return WALK_LOOPS + 1 + ceil_div(items, threads) * element_loops(ins, window, terms)


def whole_loops(ins: Instruction, window: int, threads: int) -> int:
    """Iterations one invocation takes for a whole instruction (an upper bound: every token present)."""
    name = ins.op.name
    if name in ELEMENTWISE or name == "DOT_PRODUCT":
        terms = ins["in_len"] if name == "DOT_PRODUCT" else 0
        return part_loops(ins, window, elements(ins), terms, threads)
    if name == "ARGMAX":
        return WALK_LOOPS + 2 * (ceil_div(ins["length"], threads) + 1) + 2 * threads.bit_length()
    if name == "ATTEND":
        length, head = ins["length"], ins["head"]
        query = ceil_div(head, threads) * (length + 2) + 1
        scores = ceil_div(window, threads) * (head * (length + 2) + 2) + 1
        mix = ceil_div(head, threads) * (window * (length + 3) + 4) + 1
        return WALK_LOOPS + query + scores + mix
    return WALK_LOOPS  # STORE_PIXEL, HALT


def check_runnable(ins: Instruction, window: int, where: str, threads: int = VM_THREADS) -> None:
    """Refuse an instruction no dispatch can hold: one that cannot be split and alone loops past the limit."""
    if ins.op.name in ELEMENTWISE or ins.op.name == "DOT_PRODUCT":
        return
    loops = scan_loops(window) + whole_loops(ins, window, threads)
    if loops > DISPATCH_LOOPS:
        raise PxglError(
            f"{where}: loops {loops} times in one GPU invocation, past the {DISPATCH_LOOPS} every driver runs "
            f"(llvmpipe stops at 65,535) and {ins.op.name} cannot be split; use a smaller length, head or window"
        )


def split(ins: Instruction, end: int, window: int, threads: int) -> list[Dispatch]:
    """The parts of one splittable instruction (its pixels [ins.pixel, end)), each within DISPATCH_LOOPS: a
    block of elements per part and, where one element's sum alone is too long (DOT_PRODUCT), blocks of its
    terms in order (each part adds its terms to what the part before left in dst)."""
    room = DISPATCH_LOOPS - scan_loops(window) - WALK_LOOPS - 1
    count, terms = elements(ins), ins["in_len"] if ins.op.name == "DOT_PRODUCT" else 1
    term_block = min(terms, room - 2)
    item_block = room // element_loops(ins, window, term_block) * threads
    return [
        Dispatch(ins.pixel, end, item, min(item + item_block, count), term, min(term + term_block, terms))
        for item in range(0, count, item_block)
        for term in range(0, terms, term_block)
    ]


def plan(program: Program, window: int, threads: int) -> list[Dispatch]:
    """The dispatches that run the program: consecutive whole instructions while their loops fit one
    dispatch, and an instruction too long for one alone in parts (split)."""
    height, width, _ = program.pixels.shape
    ends = [ins.pixel for ins in program.instructions[1:]] + [width * height]
    budget = DISPATCH_LOOPS - scan_loops(window)
    dispatches: list[Dispatch] = []
    begin, loops = HEADER_PIXELS, 0
    for ins, end in zip(program.instructions, ends, strict=True):
        cost = whole_loops(ins, window, threads)
        if loops and loops + cost > budget:
            dispatches.append(Dispatch(begin, ins.pixel))
            begin, loops = ins.pixel, 0
        if cost <= budget:
            loops += cost
            continue
        check_runnable(ins, window, f"{program.source}: pixel {ins.pixel} ({ins.op.name})", threads)
        dispatches += split(ins, end, window, threads)
        begin = end
    if begin < width * height:
        dispatches.append(Dispatch(begin, width * height))
    return dispatches
