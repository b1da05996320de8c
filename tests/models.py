"""Random pixellm models of any size, written to disk the way `pxgl train` writes them."""

import json
from pathlib import Path

import numpy as np
import oracle

from engine.model import Model, load_model, save_model
from engine.spec import ModelSpec, layout_tensors, meta_path_for


def random_model(
    directory: Path,
    rng: np.random.Generator,
    vocab: int = 1024,
    embed: int = 128,
    hidden: int = 128,
    window: int = 16,
    name: str = "random",
) -> Model:
    """Random uint8 weights; scales chosen so activations stay O(1) and logits spread enough that the
    softmax confidence takes many values (uniform bytes around the zero point have a spread of ~74)."""
    spread = {"b_hidden": 1.0, "b_out": 1.0, "embed": 1.0, "hidden": embed**-0.5, "out": hidden**-0.5}
    quant = {n: (float(s / 74 * rng.uniform(0.5, 4.0)), int(rng.integers(112, 144))) for n, s in spread.items()}
    tensors, width, height = layout_tensors(vocab, embed, hidden, quant)
    spec = ModelSpec(vocab, embed, hidden, window, width, height, tensors, f"{name}.tokenizer.json", {})
    n_bytes = sum(t.size for t in tensors.values())
    path = directory / f"{name}.pxi"
    save_model(path, spec, rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return load_model(path)


def random_rows(rng: np.random.Generator, n: int, vocab: int, max_len: int = 200) -> list[np.ndarray]:
    return [rng.integers(0, vocab, int(rng.integers(1, max_len + 1))) for _ in range(n)]


def params_of(model: Model) -> dict[str, np.ndarray]:
    """The oracle's float32 weights of a model written to disk (weights .pxi + meta beside it)."""
    return oracle.dequantize(json.loads(meta_path_for(Path(model.source)).read_text()), model.weights)
