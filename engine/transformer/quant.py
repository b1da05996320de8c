"""Version-2 tensor bytes (docs/FORMATS.md §14.3): q8 and q4 blocks (GGUF's Q8_0 and Q4_0, byte for byte),
per-tensor affine uint8 (§2) and float16, to and from float32 with numpy."""

import math

import numpy as np

from ..errors import PxglError

BLOCK = 32
"""Weights of one q8/q4 block: consecutive along a row, the reduction dimension."""
BLOCK_BYTES = {"q8": 34, "q4": 18}
"""A block's float16 scale d, then 32 int8 (q8) or 16 bytes of nibbles (q4)."""
MATRIX_QUANTS = ("q8", "q4", "u8", "f16")
VECTOR_QUANTS = ("f16",)
"""Norms and biases are always float16."""
F16_LARGEST = 65504.0


def tensor_nbytes(shape: tuple[int, ...], quant: str) -> int:
    n = math.prod(shape)
    if quant in BLOCK_BYTES:
        return n // BLOCK * BLOCK_BYTES[quant]
    return 2 * n if quant == "f16" else n


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: x ± ½ in float64, where a float32 plus ½ is exact (a float32 sum would round 0.49999997 up),
    then truncated; a fifth of the time of splitting |x| into whole and fraction."""
    return np.trunc(x.astype(np.float64) + np.copysign(0.5, x))


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1 / d in float32, 0 where d is 0 (an all-zero block)."""
    return np.where(d == 0, np.float32(0), np.float32(1) / np.where(d == 0, np.float32(1), d)).astype(np.float32)


def _quantize_q8(blocks: np.ndarray) -> np.ndarray:
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    q = _round_half_away((blocks * _reciprocal(d)).astype(np.float32)).astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)


def _quantize_q4(blocks: np.ndarray) -> np.ndarray:
    largest = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)  # the first on ties
    d = (largest / np.float32(-8)).astype(np.float32)
    shifted = ((blocks * _reciprocal(d)).astype(np.float32) + np.float32(8.5)).astype(np.float32)
    q = np.minimum(np.trunc(shifted), 15).astype(np.uint8)
    return np.concatenate([d.astype("<f2").view(np.uint8), q[:, :16] | (q[:, 16:] << np.uint8(4))], axis=1)


def affine_u8(values: np.ndarray) -> tuple[float, int]:
    """§10's grid: the 0.01 and 99.99 percentiles widened to hold 0; (scale, zero_point)."""
    lo = min(float(np.percentile(values, 0.01)), 0.0)
    hi = max(float(np.percentile(values, 99.99)), 0.0)
    scale = (hi - lo) / 255 or 1.0
    return scale, round(-lo / scale)


def quantize(values: np.ndarray, quant: str, name: str) -> tuple[np.ndarray, float, int]:
    """A tensor's bytes (uint8, row-major as §14.3 lays them) and, for u8, its (scale, zero_point); (0, 0)
    otherwise. Refuses values no float16 scale or value can hold, naming the tensor."""
    x = np.asarray(values, dtype=np.float32)
    if not np.isfinite(x).all():
        raise PxglError(f"tensor '{name}': weights must be finite")
    if quant in BLOCK_BYTES:
        if x.shape[-1] % BLOCK:
            raise PxglError(f"tensor '{name}': {quant} needs rows of a multiple of {BLOCK}, got {x.shape[-1]}")
        blocks = x.reshape(-1, BLOCK)
        largest = F16_LARGEST * (127 if quant == "q8" else 8)
        if blocks.size and float(np.abs(blocks).max()) > largest:
            raise PxglError(f"tensor '{name}': a weight past {largest:g} has no float16 {quant} scale")
        packed = _quantize_q8(blocks) if quant == "q8" else _quantize_q4(blocks)
        return packed.reshape(-1), 0.0, 0
    if quant == "f16":
        if x.size and float(np.abs(x).max()) > F16_LARGEST:
            raise PxglError(f"tensor '{name}': a weight past {F16_LARGEST:g} is not a float16")
        return x.astype("<f2").view(np.uint8).reshape(-1), 0.0, 0
    scale, zero_point = affine_u8(x)
    q = np.clip(np.round(x / np.float32(scale)) + zero_point, 0, 255).astype(np.uint8)
    return q.reshape(-1), scale, zero_point


def _float16s(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<f2")


def dequantize(raw: np.ndarray, shape: tuple[int, ...], quant: str, scale: float = 0.0, zero_point: int = 0):
    """float32 values of a tensor from its tensor_nbytes bytes."""
    if quant == "f16":
        return _float16s(raw).astype(np.float32).reshape(shape)
    if quant == "u8":
        return ((raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).reshape(shape)
    blocks = raw.reshape(-1, BLOCK_BYTES[quant])
    d = _float16s(blocks[:, :2]).astype(np.float32)
    if quant == "q8":
        q = blocks[:, 2:].view(np.int8).astype(np.float32)
    else:
        q = np.concatenate([blocks[:, 2:] & 0x0F, blocks[:, 2:] >> 4], axis=1).astype(np.float32) - np.float32(8)
    return (d * q).astype(np.float32).reshape(shape)


def first_nonfinite(raw: np.ndarray, quant: str) -> int | None:
    """The index of the first float16 (an f16 value, a block's d) that is infinite or NaN, or None."""
    if quant == "f16":
        halves = _float16s(raw)
    elif quant in BLOCK_BYTES:
        halves = _float16s(raw.reshape(-1, BLOCK_BYTES[quant])[:, :2])
    else:
        return None
    exponent_all_ones = (halves.view(np.uint16).reshape(-1) & 0x7C00) == 0x7C00
    found = np.flatnonzero(exponent_all_ones)
    return int(found[0]) if found.size else None
