"""Hugging Face model folders in and out (docs/FORMATS.md §10.2): folder.py reads a folder's config.json, shard
index and safetensors headers as untrusted input, config.py maps config.json to and from §14.1's architecture,
names.py maps the tensors' names and layouts (GPT-2's Conv1D and fused c_attn), importer.py quantizes a folder
into a version-2 model, export.py writes one as a folder transformers loads."""
