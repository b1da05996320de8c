"""Numbers the file formats and the shaders share (docs/FORMATS.md), each defined once. Python reads them
here; every shader receives SHADER_CONSTANTS as #defines (engine/gl/source.py), so no GLSL file writes one."""

TOKEN_MARK = 255
"""Blue channel of every token pixel (§4); (0, 0, 0) ends a row."""
WRITTEN_ALPHA = 255
"""Alpha every shader stores with a prediction pixel; any other alpha was never written (§5)."""
REFUSED_WORD = 0
"""What the fused kernels store instead of a prediction for a prompt holding an id ≥ vocab_size."""
POISON_BYTE = 0xEE
"""Fresh outputs hold garbage on purpose, so a pixel a run fails to write cannot pass a check."""
POISON_WORD = int.from_bytes(bytes([POISON_BYTE]) * 4, "little")
UNANSWERED_WORD = 1
"""What the resident kernel answers when it could not compute a prediction (alpha 0, unlike a refusal's word)."""
MAX_TILE = 16384
"""Prompts per tile of the texture executors (passes, pxvm): T_logits then takes 64 MiB at vocab 1024."""

SHADER_CONSTANTS: dict[str, int] = {
    "TOKEN_MARK": TOKEN_MARK,
    "WRITTEN_ALPHA": WRITTEN_ALPHA,
    "REFUSED_WORD": REFUSED_WORD,
    "UNANSWERED_WORD": UNANSWERED_WORD,
}
