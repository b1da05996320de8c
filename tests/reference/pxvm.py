"""The pxVM reference interpreter: what each opcode means (docs/FORMATS.md §7), for one prompt, on the
host. Tests only.

Deliberately independent of engine/: it decodes the program pixels itself, reads the meta dict and the
raw weight pixels, and checks every access against its memory space — any access outside, or a read of
scratch no instruction wrote, raises Fault. So a program it runs without a Fault stays in bounds.

Beside each scratch value it tracks a magnitude: the sum of |terms| behind the value that float32
arithmetic in another order (the GPU's) may round differently, so the GPU's value lies within
1e-5 * magnitude of the reference's. Loads are exact on both (0); sums and their consequences are not."""

from dataclasses import dataclass

import numpy as np

MAGIC = (0x70, 0x78, 0x56)
TENSORS = {
    0: ("b_hidden", "b_out", "embed", "hidden", "out"),
    1: (
        "embed",
        "attn.pos",
        "attn.query",
        "attn.key",
        "attn.value",
        *(f"layer{layer}.{part}" for layer in range(4) for part in ("weight", "bias")),
        "out.weight",
        "out.bias",
    ),
}
"""Tensor index → name, per program version (a version-1 index names the meta's version-1 tensor)."""
V0_AS_V1 = {
    "b_hidden": "layer0.bias",
    "b_out": "out.bias",
    "embed": "embed",
    "hidden": "layer0.weight",
    "out": "out.weight",
}
OPERAND_COUNT = {
    0x01: 4,  # LOAD_WEIGHT_SLICE tensor, offset, length, dst
    0x02: 4,  # LOAD_TOKEN back, tensor, length, dst
    0x03: 6,  # DOT_PRODUCT src, in_len, tensor, offset, out_len, dst
    0x04: 3,  # ADD_BIAS dst, src, length
    0x05: 2,  # RELU dst, length
    0x06: 3,  # ARGMAX src, length, dst
    0x07: 2,  # STORE_PIXEL src, out
    0x08: 3,  # POOL_TOKENS tensor, length, dst
    0x09: 4,  # CONCAT_TOKENS tensor, length, count, dst (version 1)
    0x0A: 9,  # ATTEND embed, pos, query, key, value, length, head, tmp, dst (version 1)
    0xFF: 0,  # HALT
}
SINCE = {0x09: 1, 0x0A: 1}
RTOL = 1e-5


class Fault(Exception):
    """The program did something the format forbids (the validator should have rejected it)."""


@dataclass
class Result:
    pixel: tuple[int, int, int] | None
    """The prediction pixel (o0), or None if the program never stored one."""
    pixel_id_exact: bool
    """False when the id's float lay within rounding of an integer or came from a near-tie ARGMAX."""
    scratch: np.ndarray
    """float32; NaN where no instruction wrote."""
    magnitude: np.ndarray
    """float64 error scale of each scratch value (inf: any value is right, e.g. the id of a near tie)."""

    def near(self, values: np.ndarray) -> np.ndarray:
        """Which of a GPU's scratch values (same shape) agree with the reference's: NaN exactly where the
        reference never wrote, and within RTOL * magnitude elsewhere."""
        both_nan = np.isnan(values) & np.isnan(self.scratch)
        with np.errstate(invalid="ignore"):
            close = np.abs(values.astype(np.float64) - self.scratch) <= RTOL * self.magnitude
        return both_nan | close


def decode(pixels: np.ndarray) -> tuple[int, int, list[tuple[int, list[int]]]]:
    """(version, scratch size, [(opcode, operands)]) of a program image; Fault on anything malformed."""
    stream = [tuple(int(c) for c in p) for p in np.asarray(pixels).reshape(-1, 3)]

    def value(pixels: list[tuple[int, int, int]]) -> int:
        return sum((p[0] + 256 * p[1] + 65536 * p[2]) << (24 * i) for i, p in enumerate(pixels))

    if len(stream) < 3 or stream[0] != MAGIC or value(stream[1:2]) not in (0, 1):
        raise Fault("bad magic or version")
    version = value(stream[1:2])
    width = 1 + version  # pixels per operand
    program, pc = [], 3
    while True:
        if pc >= len(stream):
            raise Fault("no HALT")
        code, count, flags = stream[pc]
        end = pc + 1 + count * width
        if code not in OPERAND_COUNT or count != OPERAND_COUNT[code] or flags != 0 or end > len(stream):
            raise Fault(f"bad instruction header at pixel {pc}")
        if SINCE.get(code, 0) > version:
            raise Fault(f"opcode {code} in a version-{version} program")
        program.append((code, [value(stream[pc + 1 + i * width : pc + 1 + (i + 1) * width]) for i in range(count)]))
        pc = end
        if code == 0xFF:
            break
    if any(p != (0, 0, 0) for p in stream[pc:]):
        raise Fault("junk after HALT")
    return version, value(stream[2:3]), program


class Machine:
    def __init__(
        self, meta: dict, weight_pixels: np.ndarray, tokens: list[int], scratch_size: int, version: int = 0
    ) -> None:
        """`tokens`: the prompt's last context_window token ids (what the GPU reads)."""
        stream = np.asarray(weight_pixels, dtype=np.uint8).reshape(-1)
        by_v1 = {}  # the meta's tensors under their version-1 names, dequantized
        for name, t in meta["tensors"].items():
            q = stream[t["offset"] : t["offset"] + int(np.prod(t["shape"]))].astype(np.float32)
            v1 = V0_AS_V1[name] if meta["version"] == 0 else name
            by_v1[v1] = (q - np.float32(t["zero_point"])) * np.float32(t["scale"])
        self.names = TENSORS[version]
        self.weights = {
            name: by_v1[V0_AS_V1[name] if version == 0 else name]
            for name in self.names
            if (V0_AS_V1[name] if version == 0 else name) in by_v1
        }
        self.window = meta["context_window"] if meta["version"] == 0 else meta["context"]["window"]
        self.vocab = meta["vocab_size"]
        self.tokens = list(tokens)
        assert 1 <= len(self.tokens) <= self.window
        self.scratch = np.full(scratch_size, np.nan, dtype=np.float32)
        self.magnitude = np.zeros(scratch_size)
        self.written = np.zeros(scratch_size, dtype=bool)
        self.pixel: tuple[int, int, int] | None = None
        self.pixel_id_exact = True

    def tensor(self, index: int, start: int, length: int) -> np.ndarray:
        if index >= len(self.names) or self.names[index] not in self.weights:
            raise Fault(f"tensor {index}")
        w = self.weights[self.names[index]]
        if start + length > w.size:
            raise Fault(f"weights {start}..{start + length} past {self.names[index]}'s {w.size}")
        return w[start : start + length]

    def read(self, address: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        if address + length > self.scratch.size or not self.written[address : address + length].all():
            raise Fault(f"scratch read {address}..{address + length}")
        return self.scratch[address : address + length].copy(), self.magnitude[address : address + length].copy()

    def write(self, address: int, values: np.ndarray, magnitude: np.ndarray) -> None:
        if address + len(values) > self.scratch.size:
            raise Fault(f"scratch write {address}..{address + len(values)}")
        self.scratch[address : address + len(values)] = values
        self.magnitude[address : address + len(values)] = magnitude
        self.written[address : address + len(values)] = True

    def token_rows(self, tensor: int, length: int) -> list[np.ndarray]:
        """Row `id` of the tensor seen as rows of `length`, for each of the prompt's tokens. Rows must
        exist for every id the TOKENS space may hold (0..vocab-1), whatever this prompt's ids are."""
        self.tensor(tensor, 0, self.vocab * length)
        return [self.tensor(tensor, token * length, length) for token in self.tokens]

    def step(self, code: int, a: list[int]) -> None:
        if code == 0x01:  # LOAD_WEIGHT_SLICE
            tensor, offset, length, dst = a
            self.write(dst, self.tensor(tensor, offset, length), np.zeros(length))
        elif code == 0x02:  # LOAD_TOKEN
            back, tensor, length, dst = a
            if back >= self.window:
                raise Fault(f"token t{back} past the window")
            rows = self.token_rows(tensor, length)
            w = rows[len(rows) - 1 - back] if back < len(rows) else np.zeros(length, np.float32)
            self.write(dst, w, np.zeros(length))
        elif code == 0x08:  # POOL_TOKENS
            tensor, length, dst = a
            rows = np.stack(self.token_rows(tensor, length)).astype(np.float64)
            self.write(dst, rows.mean(axis=0).astype(np.float32), np.abs(rows).mean(axis=0))
        elif code == 0x09:  # CONCAT_TOKENS
            tensor, length, count, dst = a
            if count > self.window:
                raise Fault(f"count {count} past the window")
            rows = self.token_rows(tensor, length)
            slots = [rows[len(rows) - count + s] if len(rows) - count + s >= 0 else np.zeros(length, np.float32)
                     for s in range(count)]  # fmt: skip
            self.write(dst, np.concatenate(slots), np.zeros(count * length))
        elif code == 0x0A:  # ATTEND
            embed, pos, query, key, value, length, head, tmp, dst = a
            self.attend(embed, pos, query, key, value, length, head, tmp, dst)
        elif code == 0x03:  # DOT_PRODUCT
            src, in_len, tensor, offset, out_len, dst = a
            x, mx = self.read(src, in_len)
            w = self.tensor(tensor, offset, in_len * out_len).reshape(in_len, out_len).astype(np.float64)
            self._disjoint(src, in_len, dst, out_len)
            self.write(dst, (x.astype(np.float64) @ w).astype(np.float32), (np.abs(x) + mx) @ np.abs(w))
        elif code == 0x04:  # ADD_BIAS
            dst, src, length = a
            x, mx = self.read(dst, length)
            b, mb = self.read(src, length)
            self._disjoint(src, length, dst, length)
            self.write(dst, x + b, mx + mb)
        elif code == 0x05:  # RELU
            dst, length = a
            x, mx = self.read(dst, length)
            self.write(dst, np.maximum(x, np.float32(0)), mx)
        elif code == 0x06:  # ARGMAX
            src, length, dst = a
            x, mx = self.read(src, length)
            self._disjoint(src, length, dst, 2)
            best = int(np.argmax(x))  # numpy: the first (lowest) index of the maximum
            p = 1.0 / np.exp(x.astype(np.float64) - float(x[best])).sum()
            err = RTOL * mx.max()  # 0 when every value is exact: then even exact ties must go to the lowest index
            tied = err > 0 and np.count_nonzero(x >= x[best] - 2 * err) > 1
            # p: the GPU's exp is not numpy's, and the values may carry err each
            self.write(dst, np.array([best, p], np.float32), np.array([np.inf if tied else 0.0, 1 + 2 * mx.max()]))
        elif code == 0x07:  # STORE_PIXEL
            src, out = a
            if out != 0:
                raise Fault(f"output o{out}")
            (v, p), (mv, _) = self.read(src, 2)
            token = int(np.clip(np.floor(v), 0, 65535))
            confidence = int(np.clip(np.floor(255 * np.float64(p) + 0.5), 0, 255))
            self.pixel = (token % 256, token // 256, confidence)
            tol = RTOL * mv
            self.pixel_id_exact = bool(np.floor(v - tol) == np.floor(v + tol))
        else:
            raise Fault(f"opcode {code}")

    def attend(self, embed, pos, query, key, value, length, head, tmp, dst) -> None:
        """One attention head over the prompt's tokens (docs/FORMATS.md §7.4): tmp = q, then the scores (0
        past the tokens); dst = sum_j softmax(scores)_j v_j. Magnitudes bound the float32 rounding."""
        rows = self.token_rows(embed, length)
        positions = self.tensor(pos, 0, self.window * length).reshape(self.window, length).astype(np.float64)
        wq, wk, wv = (
            self.tensor(t, 0, length * head).reshape(length, head).astype(np.float64) for t in (query, key, value)
        )
        self._disjoint(tmp, head + self.window, dst, head)
        m = len(rows)
        u = np.stack([rows[m - 1 - j] for j in range(m)]).astype(np.float64) + positions[:m]
        q, k, v = u[0] @ wq, u @ wk, u @ wv
        mu = np.abs(u)
        mq, mk, mv = mu[0] @ np.abs(wq), mu @ np.abs(wk), mu @ np.abs(wv)
        s = (k @ q) / np.sqrt(head)
        ms = (mk @ mq) / np.sqrt(head)
        a = np.exp(s - s.max())
        a /= a.sum()
        scores = np.zeros(self.window)
        scores[:m] = s
        mscores = np.zeros(self.window)
        mscores[:m] = ms
        self.write(tmp, np.concatenate([q, scores]).astype(np.float32), np.concatenate([mq, mscores]))
        # the softmax weights move with every score's error: bound the output by it, scaled by |v|
        spread = float(np.max(ms)) if m else 0.0
        self.write(dst, (a @ v).astype(np.float32), np.abs(a) @ mv + spread * np.abs(v).max(axis=0) * 4)

    @staticmethod
    def _disjoint(a: int, a_len: int, b: int, b_len: int) -> None:
        if a < b + b_len and b < a + a_len:
            raise Fault("an instruction's output overlaps its input")


def run(program_pixels: np.ndarray, meta: dict, weight_pixels: np.ndarray, tokens: list[int]) -> Result:
    """Run a program over one prompt's last context_window tokens."""
    version, scratch_size, program = decode(program_pixels)
    machine = Machine(meta, weight_pixels, tokens, scratch_size, version)
    for code, operands in program:
        if code == 0xFF:
            break
        machine.step(code, operands)
    return Result(machine.pixel, machine.pixel_id_exact, machine.scratch, machine.magnitude)


def assert_gpu_matches(program_pixels, meta, weight_pixels, tails: list[list[int]], pixels, scratch, what: str):
    """The GPU's (n, 3) prediction pixels and (n, scratch) floats against the reference, prompt by prompt:
    scratch within RTOL * magnitude (NaN where unwritten), ids exact unless ambiguous, confidence ±1."""
    for r, tokens in enumerate(tails):
        ref = run(program_pixels, meta, weight_pixels, tokens)
        ok = ref.near(scratch[r])
        if not ok.all():
            a = int(np.flatnonzero(~ok)[0])
            raise AssertionError(
                f"{what}: prompt {r}, s{a}: GPU {scratch[r][a]!r}, reference {ref.scratch[a]!r} "
                f"(tolerance {RTOL * ref.magnitude[a]:.3g})"
            )
        got = tuple(int(c) for c in pixels[r])
        assert ref.pixel is not None, f"{what}: the reference never stored a pixel"
        if ref.pixel_id_exact:
            assert got[:2] == ref.pixel[:2], f"{what}: prompt {r}: GPU pixel {got}, reference {ref.pixel}"
        assert abs(got[2] - ref.pixel[2]) <= 1, f"{what}: prompt {r}: GPU pixel {got}, reference {ref.pixel}"
