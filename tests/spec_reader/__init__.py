"""An independent reading of docs/FORMATS.md §14 (version-2 transformers), written from the spec alone.

numpy, Pillow, json and hashlib only: nothing from pxgl or tests/reference. meta.py (§14.1, §14.2, §14.7),
quant.py (§14.3), forward.py (§14.4 with its float16 KV cache), pixels.py (§14.5, §3's prediction),
choose.py (§11), evaluate.py (§14.6), viz.py (§14.8), program.py (§7.7). tests/test_spec_reader.py runs it
against pxgl's executors, so where the spec is silent the two readings disagree there.
"""
