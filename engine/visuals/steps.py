"""A generation's logits as a strip (`pxgl generate --viz DIR`): one band per step, the vocabulary left to
right coloured by the step's log-probability (bright: the likeliest; dark: LOG_SPAN nats below it or less),
the likeliest token boxed and the chosen one marked below it, so a sampled step that left the top token
shows."""

import numpy as np
from PIL import Image, ImageDraw

from .colour import sequential

BAND_PX = 8
LOG_SPAN = 10.0
"""Height of one step's band."""
MARK = (255, 255, 255)
CHOSEN = (255, 64, 64)


def logits_strip(logits: np.ndarray, chosen: np.ndarray) -> Image.Image:
    """(N, V) float32 logits of N steps and the (N,) tokens chosen → the strip, V pixels wide."""
    below_top = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)  # log p relative to the top
    colours = sequential(below_top + LOG_SPAN, LOG_SPAN)
    image = Image.fromarray(np.repeat(colours, BAND_PX, axis=0), "RGB")
    draw = ImageDraw.Draw(image)
    for step, (top, token) in enumerate(zip(logits.argmax(axis=1).tolist(), chosen.tolist(), strict=True)):
        y = step * BAND_PX
        draw.rectangle((top - 2, y, top + 2, y + BAND_PX - 2), outline=MARK)
        draw.line((token, y + BAND_PX - 1, token, y + BAND_PX - 1), fill=CHOSEN)
    return image
