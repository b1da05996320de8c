"""§14.3: a tensor's bytes → float32 values."""

from __future__ import annotations

import numpy as np

from .meta import SpecError, Tensor


def dequantize(stream: np.ndarray, tensor: Tensor) -> np.ndarray:
    raw = stream[tensor.offset : tensor.offset + tensor.nbytes]
    n = tensor.size
    if tensor.quant == "f16":
        values = raw.view("<f2")
        if not np.isfinite(values).all():
            raise SpecError(f"{tensor.name}: a float16 that is not finite")
        out = values.astype(np.float32)
    elif tensor.quant == "u8":
        out = (raw.astype(np.float32) - np.float32(tensor.zero_point)) * np.float32(tensor.scale)
    else:
        block = 34 if tensor.quant == "q8" else 18
        blocks = raw.reshape(n // 32, block)
        d = blocks[:, :2].copy().view("<f2").reshape(-1)
        if not np.isfinite(d).all():
            raise SpecError(f"{tensor.name}: a block's d is not finite")
        d32 = d.astype(np.float32)[:, None]
        if tensor.quant == "q8":
            q = blocks[:, 2:].view(np.int8).astype(np.float32)
        else:
            packed = blocks[:, 2:]
            q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32) - np.float32(8)
        out = (d32 * q).reshape(-1)
    return out.reshape(tensor.shape).astype(np.float32)
