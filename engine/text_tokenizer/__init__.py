"""Version 1 of pxgl's tokenizer file (docs/FORMATS.md §6.1): the BPE tokenizers of models made elsewhere.

alphabet.py holds GPT-2's byte alphabet, steps.py the normalizer, pre-tokenizer and decoder steps, added.py the
added tokens' matching, bpe.py the model's merges, model.py TextTokenizer (the file, encode, decode); hf.py
converts from and to Hugging Face's tokenizer.json (not imported here: it reads version 0 too)."""

from .added import AddedToken
from .model import TextTokenizer

__all__ = ["AddedToken", "TextTokenizer"]
