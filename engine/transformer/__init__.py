"""Version 2: decoder-only transformers (GPT-2- and Llama-shaped) as pixellm models, docs/FORMATS.md §14.

meta.py reads and checks the meta, quant.py holds the q8/q4/u8/f16 bytes, operations.py builds the one list of
operations every executor walks, numpy_executor.py walks it in numpy, files.py writes and reads the set;
gpu/ walks it on the GPU (the passes executor, with its KV cache there). The other GPU executors and the verbs
come in later steps (issue 27)."""

from .files import lay_out, random_values, read_transformer, save_transformer, write_random_transformer
from .meta import TransformerArchitecture, TransformerSpec, transformer_spec_from_meta
from .numpy_executor import KVCache, NumpyTransformer
from .operations import OPERATION_KINDS, Operation, operations

__all__ = [
    "OPERATION_KINDS",
    "KVCache",
    "NumpyTransformer",
    "Operation",
    "TransformerArchitecture",
    "TransformerSpec",
    "lay_out",
    "operations",
    "random_values",
    "read_transformer",
    "save_transformer",
    "transformer_spec_from_meta",
    "write_random_transformer",
]
