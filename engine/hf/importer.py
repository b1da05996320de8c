"""`pxgl import FOLDER` (docs/FORMATS.md §10.2): a Hugging Face folder's config.json and safetensors weights
into a version-2 model, every tensor checked against the architecture before any is read, then quantized a
tensor at a time (only the byte stream and one tensor's floats held)."""

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import PxglError
from ..tokenizer import Tokenizer
from ..transformer.interchange import ImportedTransformer, import_quants, quantize_tensors
from ..transformer.meta import TransformerArchitecture, few
from .config import GPT2, architecture_from_config
from .folder import CONFIG, TOKENIZER_CONFIG, Located, TensorReader, locate, read_json
from .names import DROPPED, hf_shapes, pxgl_tensor


@dataclass(frozen=True)
class Folder:
    """A folder checked, nothing quantized yet: what `import` needs to plan its outputs."""

    path: Path
    family: str
    architecture: TransformerArchitecture
    declared_context: int
    located: dict[str, Located]
    prefix: str
    kinds: dict[str, str]
    bos: int | None
    tokenizer: Tokenizer | None

    @property
    def metadata(self) -> dict[str, str]:
        return next(iter(self.located.values())).header.metadata


def _prefix(family: str, names: set[str]) -> str:
    """GPT-2's names carry `transformer.` (GPT2LMHeadModel) or not (GPT2Model's, as the hub's gpt2 stores)."""
    return "transformer." if family == GPT2 and any(name.startswith("transformer.") for name in names) else ""


def check_tensors(
    path: Path, family: str, architecture: TransformerArchitecture, located: dict[str, Located], prefix: str
) -> None:
    """The folder holds exactly the architecture's tensors, each of its shape (a buffer the spec computes, or a
    head tied to the embeddings, read past)."""
    expected = hf_shapes(family, architecture, prefix)
    passed = {name for name in located if name.endswith(DROPPED)}
    if architecture.tied_head:
        passed |= {"lm_head.weight"} & set(located)
    missing, extra = set(expected) - set(located), set(located) - set(expected) - passed
    if missing or extra:
        raise PxglError(
            f"{path / CONFIG} describes a model whose weights are not the folder's: missing "
            f"{few(missing) if missing else 'none'}, unknown {few(extra) if extra else 'none'} (does config.json "
            "match the weights?)"
        )
    for name, shape in expected.items():
        got = tuple(located[name].entry["shape"])
        if got != shape:
            raise PxglError(
                f"{located[name].path}: tensor {name!r} is {list(got)}; {CONFIG} makes it {list(shape)} "
                "(does config.json match the weights?)"
            )


def folder_tokenizer(folder: Path, vocab_size: int) -> Tokenizer | None:
    """The folder's tokenizer (tokenizer.json + tokenizer_config.json, §6.1), if it has one, of the model's
    vocabulary."""
    from ..text_tokenizer.hf import tokenizer_from_hf

    if not os.path.lexists(folder / "tokenizer.json"):  # a dangling link is refused as the tokenizer
        return None
    tokenizer = tokenizer_from_hf(folder)
    if tokenizer.vocab_size > vocab_size:
        raise PxglError(
            f"{folder / 'tokenizer.json'}: {tokenizer.vocab_size} tokens; config.json's vocab_size is {vocab_size} "
            "(pxgl's model and tokenizer have one vocabulary)"
        )
    return tokenizer.padded_to(vocab_size)  # Qwen2's 151,936 embedding rows for 151,665 tokens: the rest padding


def model_bos(folder: Path, config: dict, tokenizer: Tokenizer | None) -> int | None:
    """The id every prompt begins with (§14.4): the tokenizer's BOS when it adds one; without a tokenizer,
    config.json's bos_token_id when tokenizer_config.json says add_bos_token."""
    if tokenizer is not None:
        return tokenizer.bos_id if tokenizer.add_bos else None
    path = folder / TOKENIZER_CONFIG
    settings = read_json(path, "tokenizer config") if os.path.lexists(path) else {}
    if not isinstance(settings, dict):
        raise PxglError(f"{path}: not a JSON object; {TOKENIZER_CONFIG} is an object of settings")
    bos = config.get("bos_token_id")
    return bos if settings.get("add_bos_token") is True and type(bos) is int else None


def open_folder(path: Path, quant: str | None) -> Folder:
    """Every check a folder passes before a tensor is read: config.json, the shards, every header, the tensors'
    names and shapes, the quantization (--quant, else the metadata's pxgl.quantization, else q8)."""
    config = read_json(path / CONFIG, "model config")
    try:
        family, architecture, declared = architecture_from_config(config)
    except PxglError as e:  # its messages begin "config.json: ": say which folder's
        raise PxglError(f"{path}/{e}") from None
    located = locate(path)
    prefix = _prefix(family, set(located))
    check_tensors(path, family, architecture, located, prefix)
    metadata = next(iter(located.values())).header.metadata
    kinds = import_quants(architecture, quant, metadata, str(path))
    tokenizer = folder_tokenizer(path, architecture.vocab_size)
    bos = model_bos(path, config, tokenizer)
    if bos is not None and not 0 <= bos < architecture.vocab_size:
        raise PxglError(
            f"{path / CONFIG}: bos_token_id {bos} is outside the vocabulary 0..{architecture.vocab_size - 1}"
        )
    return Folder(path, family, architecture, declared, located, prefix, kinds, bos, tokenizer)


def import_folder(folder: Folder, tokenizer_name: str | None) -> ImportedTransformer:
    """The model, quantized; nothing written."""
    read = TensorReader(folder.located)

    def raw(name: str):
        return pxgl_tensor(folder.family, name, folder.prefix, read)

    name = tokenizer_name if folder.tokenizer is not None else None
    return quantize_tensors(
        folder.architecture, raw, folder.kinds, folder.bos, folder.metadata, str(folder.path), folder.tokenizer, name
    )
