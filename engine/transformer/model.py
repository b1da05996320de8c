"""A version-2 model in memory, as the front door (engine/loading.py) opens it: the spec, the weight pixels, where
it came from, its tokenizer (optional in version 2: without one only token pixels go in and out) and the
meta's `files` record (docs/FORMATS.md §14.1, §2.3)."""

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PxglError
from ..model import WRITTEN, check_written
from ..spec import meta_path_for, read_meta_document
from ..tokenizer import Tokenizer
from .files import read_transformer
from .meta import TransformerSpec

if TYPE_CHECKING:
    from .cartridge import TransformerCartridge


@dataclass(frozen=True)
class TransformerModel:
    spec: TransformerSpec
    weights: np.ndarray
    """The weight byte stream (§14.7: every image's bytes in order), 1-D uint8, as read_transformer gives it."""
    source: str
    written: dict[str, Any] = field(default_factory=dict)
    cartridge: "TransformerCartridge | None" = None
    """The cartridge the model came from (its tokenizer travels in it), if any."""

    @property
    def tokenizer_path(self) -> Path | None:
        if self.cartridge is not None or self.spec.tokenizer is None:
            return None
        return Path(self.source).with_name(self.spec.tokenizer)

    @property
    def has_tokenizer(self) -> bool:
        return self.spec.tokenizer is not None

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the meta names, checked against the vocabulary; a model without one refuses text in
        one line."""
        if self.cartridge is not None and self.cartridge.tokenizer is not None:
            return self.cartridge.tokenizer
        path = self.tokenizer_path
        if path is None:
            raise PxglError(
                f"{self.source}: this version-2 model has no tokenizer, so it takes no text: give token pixels "
                "(--input TOKENS.pxi)"
            )
        check_written(path, self.written, "tokenizer")
        tokenizer = Tokenizer.load(path)
        if tokenizer.vocab_size != self.spec.architecture.vocab_size:
            raise PxglError(
                f"{path}: tokenizer has {tokenizer.vocab_size} tokens, model has {self.spec.architecture.vocab_size}"
            )
        return tokenizer

    @property
    def slot_key_bytes(self) -> int:
        """One layer's keys of one slot as a GPU executor stores them (float16 pairs in 32-bit words): every
        slot's share one storage buffer, which bounds the slots."""
        a = self.spec.architecture
        return a.context_length * ((a.kv_heads * a.head_dim + 1) // 2) * 4

    @property
    def cache_bytes_per_slot(self) -> int:
        """The float16 KV cache of one sequence of the full context (§14.4)."""
        a = self.spec.architecture
        return 2 * a.layers * a.context_length * a.kv_heads * a.head_dim * 2


def is_version_2(document: Any) -> bool:
    return isinstance(document, dict) and document.get("version") == 2 and not isinstance(document["version"], bool)


def read_transformer_model(path: Path) -> TransformerModel:
    """`name.pxi` of a version-2 meta, checked (read_transformer), with its `files` record for the tokenizer."""
    spec, pixels = read_transformer(path)
    document = read_meta_document(meta_path_for(path))
    written = document.get(WRITTEN, {})
    return TransformerModel(spec, pixels, str(path), written if isinstance(written, dict) else {})


def transformer_from_cartridge(path: Path) -> TransformerModel:
    """A version-2 cartridge (§8.5), checked and read as open_transformer_cartridge does."""
    from .cartridge import open_transformer_cartridge

    cartridge = open_transformer_cartridge(path)
    return TransformerModel(cartridge.spec, cartridge.stream, str(path), cartridge=cartridge)
