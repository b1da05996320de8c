"""What a user would run instead of pxgl: the forward pass (docs/FORMATS.md §3) in numpy on the CPU and in
PyTorch (eager, and on CUDA a CUDA-graph replay for one prompt). Each takes token ids in host memory and
gives prediction pixels (id % 256, id // 256, round(255 p)) in host memory, like pxgl's lean paths."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tests.reference import oracle

NUMPY_CHUNK = 4096
"""Prompts per numpy step: bounds the (chunk, tokens, embed_dim) gather in memory."""


@dataclass(frozen=True)
class Tolerance:
    """How far a system may stray from the oracle: ids may differ only on near-ties of the oracle's logits
    (top two within atol + rtol·|top|), confidence bytes by `confidence`."""

    rtol: float = 1e-5
    atol: float = 1e-5
    confidence: int = 1


FP32 = Tolerance()
TF32 = Tolerance(rtol=1e-2, atol=1e-2, confidence=2)
"""tf32 rounds matmul inputs to 10 mantissa bits (~1e-3 relative per product)."""


@dataclass
class System:
    """A way to run the forward pass, as the bench sees it."""

    name: str
    kind: str
    """"pxgl" (an executor) or "peer"."""
    precision: str
    tolerance: Tolerance
    predict_one: Callable[[list[int]], np.ndarray] | None
    """A prompt's ids → its (3,) prediction pixel; None where the system has no single-prompt mode."""
    predict_batch: Callable[[np.ndarray], np.ndarray] | None
    """(B, L) uint16 ids → (B, 3) or (B, 1, 3) prediction pixels; None where it has no batch mode."""
    notes: str = ""


def prediction_pixels(ids: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """(B, 3) uint8 from argmax ids and Σ exp(logit - top)."""
    confidence = np.floor(255.0 / sums + 0.5)
    return np.stack([ids % 256, ids // 256, confidence], axis=1).astype(np.uint8)


def architecture(params: dict) -> tuple[dict, list[str], list[bool]]:
    """(context, layer names, residual flags) of the model whose oracle params these are."""
    context, layers = oracle.architecture(params["meta"])
    names = [f"layer{layer}" for layer in range(len(layers["hidden"]))]
    widths = [params[f"{n}.weight"].shape for n in names]
    residual = [layers["residual"] and i > 0 and a == b for i, (a, b) in enumerate(widths)]
    return context, names, residual


def numpy_system(params: dict) -> System:
    """The forward pass of any family member (docs/FORMATS.md §3), batched in numpy."""
    context, layers, residual = architecture(params)
    window, mode = context["window"], context["mode"]
    embed = params["embed"]

    def context_vectors(ids: np.ndarray) -> np.ndarray:
        tail = ids[:, -window:]
        if mode == "mean":
            return embed[tail].mean(axis=1)
        if mode == "concat":
            return embed[tail].reshape(len(ids), -1)
        concat = context["concat"]
        last = embed[tail[:, tail.shape[1] - concat :]].reshape(len(ids), -1)
        u = embed[tail[:, ::-1]] + params["attn.pos"][: tail.shape[1]][None]  # u_j, j = 0 the last token
        q = u[:, 0] @ params["attn.query"]
        k, v = u @ params["attn.key"], u @ params["attn.value"]
        s = np.einsum("bjd,bd->bj", k, q) / np.float32(np.sqrt(context["head_dim"]))
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        return np.concatenate([last, np.einsum("bj,bjd->bd", a, v)], axis=1)

    def forward(ids: np.ndarray) -> np.ndarray:
        h = context_vectors(ids)
        for name, add in zip(layers, residual, strict=True):
            out = np.maximum(h @ params[f"{name}.weight"] + params[f"{name}.bias"], np.float32(0))
            h = h + out if add else out
        logits = h @ params["out.weight"] + params["out.bias"]
        top = logits.argmax(axis=1)
        sums = np.exp(logits - logits[np.arange(len(top)), top][:, None]).sum(axis=1)
        return prediction_pixels(top, sums)

    def batch(ids: np.ndarray) -> np.ndarray:
        return np.concatenate([forward(ids[s : s + NUMPY_CHUNK]) for s in range(0, len(ids), NUMPY_CHUNK)])

    def one(ids: list[int]) -> np.ndarray:
        return forward(np.asarray([ids]))[0]

    return System("numpy", "peer", "fp32", FP32, one, batch, "numpy forward pass on the CPU, float32")


def torch_systems(params: dict, prompt_tokens: int) -> tuple[list[System], list[str]]:
    """PyTorch peers that can run here, and a reason for each one that cannot."""
    try:
        import torch
    except ImportError:
        return [], ["pytorch: skipped, torch is not installed (CPU build: pip install torch==2.13.0)"]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    where = torch.cuda.get_device_name(0) if cuda else "CPU"
    logits = torch_logits(torch, params, device)

    def forward(ids: "torch.Tensor") -> "torch.Tensor":
        top, index = (lg := logits(ids)).max(dim=1)
        sums = torch.exp(lg - top[:, None]).sum(dim=1)
        confidence = torch.floor(255.0 / sums + 0.5)
        return torch.stack([index % 256, index // 256, confidence.to(index.dtype)], dim=1).to(torch.uint8)

    def upload(ids: np.ndarray) -> "torch.Tensor":
        """uint16 ids to the device as they are (half the bytes of int32), widened there."""
        raw = torch.from_numpy(np.ascontiguousarray(ids).view(np.int16)).to(device)
        return raw.to(torch.int32) & 0xFFFF

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    def batch(tf32: bool, run_forward: Callable = forward) -> Callable[[np.ndarray], np.ndarray]:
        def run(ids: np.ndarray) -> np.ndarray:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            with torch.inference_mode():
                pixels = run_forward(upload(ids)).cpu().numpy()
            synchronize()
            return pixels

        return run

    def eager_one(ids: list[int]) -> np.ndarray:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.inference_mode():
            return forward(torch.tensor([ids], dtype=torch.int32, device=device)).cpu().numpy()[0]

    systems = [
        System(
            "pytorch-eager",
            "peer",
            "fp32",
            FP32,
            eager_one,
            batch(tf32=False),
            f"torch {torch.__version__} eager on {where}, float32",
        )
    ]
    skipped = []
    if cuda:
        systems.append(
            System(
                "pytorch-eager-tf32",
                "peer",
                "tf32",
                TF32,
                None,
                batch(tf32=True),
                f"torch {torch.__version__} eager on {where}, tf32 matmuls",
            )
        )
        systems.append(
            System(
                "pytorch-compile-tf32",
                "peer",
                "tf32",
                TF32,
                None,
                batch(tf32=True, run_forward=torch.compile(forward, dynamic=False)),
                f"torch {torch.__version__} torch.compile (inductor, default mode, one graph per batch size) "
                f"on {where}, tf32 matmuls",
            )
        )
        systems.append(
            System(
                "pytorch-cuda-graph",
                "peer",
                "fp32",
                FP32,
                cuda_graph_one(torch, forward, prompt_tokens),
                None,
                f"torch {torch.__version__} CUDA graph replay on {where} (pinned copies captured), float32",
            )
        )
    else:
        skipped.append("pytorch-cuda-graph, pytorch-eager-tf32: skipped, no CUDA device for torch")
    return systems, skipped


def torch_logits(torch, params: dict, device) -> Callable:
    """The forward pass of any family member (docs/FORMATS.md §3) in PyTorch: (B, L) int ids → (B, V) logits."""
    weights = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in params.items() if k != "meta"}
    context, layers, residual = architecture(params)
    window, mode = context["window"], context["mode"]

    def context_vectors(ids: "torch.Tensor") -> "torch.Tensor":
        tail = ids[:, -window:]
        rows = torch.nn.functional.embedding(tail, weights["embed"])
        if mode == "mean":
            return rows.mean(dim=1)
        if mode == "concat":
            return rows.reshape(len(ids), -1)
        concat = context["concat"]
        last = rows[:, rows.shape[1] - concat :].reshape(len(ids), -1)
        u = rows.flip(1) + weights["attn.pos"][: rows.shape[1]][None]
        q = u[:, 0] @ weights["attn.query"]
        k, v = u @ weights["attn.key"], u @ weights["attn.value"]
        a = torch.softmax(torch.einsum("bjd,bd->bj", k, q) / float(np.sqrt(context["head_dim"])), dim=1)
        return torch.cat([last, torch.einsum("bj,bjd->bd", a, v)], dim=1)

    def logits(ids: "torch.Tensor") -> "torch.Tensor":
        h = context_vectors(ids)
        for name, add in zip(layers, residual, strict=True):
            out = torch.relu(torch.addmm(weights[f"{name}.bias"], h, weights[f"{name}.weight"]))
            h = h + out if add else out
        return torch.addmm(weights["out.bias"], h, weights["out.weight"])

    return logits


def cuda_graph_one(torch, forward, tokens: int) -> Callable[[list[int]], np.ndarray]:
    """One prompt of `tokens` ids as a CUDA graph: pinned ids in, copy, forward, copy, pinned pixel out
    (the graph is captured for that one shape)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    host_ids = torch.zeros((1, tokens), dtype=torch.int32).pin_memory()
    host_pixel = torch.zeros((1, 3), dtype=torch.uint8).pin_memory()
    device_ids = torch.zeros((1, tokens), dtype=torch.int32, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):  # warm-up outside the capture (allocator, cuBLAS handles)
            forward(device_ids)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        device_ids.copy_(host_ids, non_blocking=True)
        host_pixel.copy_(forward(device_ids), non_blocking=True)
    ids_view, pixel_view = host_ids.numpy(), host_pixel.numpy()

    def one(ids: list[int]) -> np.ndarray:
        if len(ids) != tokens:
            raise ValueError(f"the CUDA graph was captured for prompts of {tokens} tokens")
        ids_view[0] = ids
        graph.replay()
        torch.cuda.current_stream().synchronize()
        return pixel_view[0].copy()

    return one
