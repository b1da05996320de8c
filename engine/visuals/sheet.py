"""The contact sheet: one labelled overview image of a run, the pipeline top to bottom on the left and the
answer on the right, drawn with Pillow's default font."""

import math

from PIL import Image, ImageDraw

from .colour import (
    BACKGROUND,
    DIM_INK,
    DIVERGING_ANCHORS,
    INK,
    MARKER,
    RGB,
    colourbar,
    drawable,
    font,
)
from .trace import PREDICTION_BLOCK_PX, Candidate, DataImage, TokenCell, TraceView


def figure(value: float) -> str:
    return f"{value:.3g}"


def scale_labels(image: DataImage) -> tuple[str, str, str]:
    """The values at the left end, middle and right end of an image's colour bar."""
    if image.colour_map == "diverging":
        return f"-{figure(image.scale)}", "0", f"+{figure(image.scale)}"
    return "0", f"{image.scale / 2:.1%}", f"{image.scale:.1%}"  # the sequential map shows probabilities


def clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


EDGE_PX = 8
"""Text stops this far from the sheet's right edge."""


class Sheet:
    """A canvas for the contact sheet: text in Pillow's default font, images pasted pixel for pixel."""

    def __init__(self, width: int, height: int) -> None:
        self.image = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    def width_of(self, text: str, size: int) -> float:
        return self.draw.textlength(drawable(text), font=font(size))

    def text(self, xy: tuple[float, float], text: str, size: int = 14, fill: RGB = INK) -> float:
        """Draw text, cut with an ellipsis where it would run past the sheet's right edge; returns its width."""
        shown = self.fitted(drawable(text), size, self.image.width - EDGE_PX - xy[0])
        self.draw.text(xy, shown, font=font(size), fill=fill)
        return self.draw.textlength(shown, font=font(size))

    def fitted(self, text: str, size: int, width: float) -> str:
        """`text`, or its longest start that fits `width` pixels with "…" after it."""
        if self.draw.textlength(text, font=font(size)) <= width:
            return text
        low, high = 0, len(text)  # text[:low] + "…" fits (or low is 0); text[:high] + "…" does not
        while high - low > 1:
            middle = (low + high) // 2
            if self.draw.textlength(text[:middle] + "…", font=font(size)) <= width:
                low = middle
            else:
                high = middle
        return text[:low] + "…"

    def heading(self, x: int, y: int, title: str, detail: str) -> int:
        used = self.text((x, y), title, 17)
        self.text((x + used + 10, y + 3), detail, 13, DIM_INK)
        return y + 26

    def scale_bar(self, x: float, y: int, image: DataImage, width: int = 180) -> int:
        """An image's colour map with its end and middle values; returns the y below."""
        self.image.paste(colourbar(image.colour_map, width, 10), (round(x), y))
        self.draw.rectangle((x - 1, y - 1, x + width, y + 10), outline=DIM_INK)
        for fraction, label in zip((0, 0.5, 1), scale_labels(image), strict=True):
            self.text((x + fraction * (width - self.width_of(label, 12)), y + 13), label, 12, DIM_INK)
        return y + 30

    def paste(self, image: Image.Image, x: int, y: int, max_width: int) -> int:
        """Paste pixel for pixel, shrunk by a whole factor (nearest) only where it would not fit."""
        factor = math.ceil(image.width / max_width)
        if factor > 1:
            image = image.resize((image.width // factor, image.height // factor), Image.Resampling.NEAREST)
        self.image.paste(image, (x, y))
        return y + image.height


OVERVIEW_MARGIN, OVERVIEW_GAP, OVERVIEW_LEFT, OVERVIEW_RIGHT = 28, 32, 600, 480


def contact_sheet(view: TraceView) -> Image.Image:
    """One labelled overview image: the pipeline top to bottom on the left, the answer on the right."""
    margin, left_w = OVERVIEW_MARGIN, OVERVIEW_LEFT
    sheet = Sheet(2 * margin + left_w + OVERVIEW_GAP + OVERVIEW_RIGHT, overview_height(view))
    y = margin
    sheet.text((margin, y), "pxgl · see the model think", 28)
    y += 42
    prompt = repr(view.prompt) if view.prompt is not None else "a token texture"
    answer = view.prediction.label
    sheet.text((margin, y), f"{prompt}  ->  {answer}    (id {view.prediction.id}, {view.confidence:.0%})", 18)
    y += 28
    sheet.text((margin, y), "   ·   ".join(view.about.values()), 13, DIM_INK)
    top = y = y + 38

    tokens = view.images["tokens"]
    rows, window = tokens.texels
    y = sheet.heading(margin, y, "1  token texture", f"{window}x{rows} RGB: {view.tokens_read()}")
    y = sheet.paste(tokens.image, margin, y, left_w)
    y = token_labels(sheet, view.tokens, margin, y + 6, tokens.block[0]) + 16

    number = 2
    for title in view.missing:
        if title != "T_logits":
            y = sheet.heading(margin, y, f"{number}  {title}", "not kept by this executor") + 16
            number += 1
    for key in view.strips:
        image = view.images[key]
        detail = f"{image.extra['length']} float32 · {image.caption}"
        y = sheet.heading(margin, y, f"{number}  {image.title}", detail)
        y = sheet.paste(image.image, margin, y, left_w) + 6
        y = sheet.scale_bar(margin, y, image) + 10
        number += 1

    heat = view.images.get("logits")
    if heat is None:
        y = sheet.heading(margin, y, f"{number}  T_logits", "not kept by this executor")
    else:
        side = heat.texels[0]
        y = sheet.heading(margin, y, f"{number}  T_logits", f"{side}x{side} float32 · {heat.extra['vocab']} tokens")
        y = sheet.paste(heat.image, margin, y, left_w) + 6
        sheet.text((margin + 200, y - 2), f"token k at (k mod {side}, k div {side})", 12, DIM_INK)
        sheet.text((margin + 200, y + 14), "ring: the cell the argmax pass chose", 12, DIM_INK)
        y = sheet.scale_bar(margin, y, heat)
    left_bottom = y

    x, y = margin + left_w + OVERVIEW_GAP, top
    y = sheet.heading(x, y, f"{number + 1}  prediction pixel", "(id mod 256, id div 256, confidence)")
    pixel = view.images["prediction"].image
    sheet.image.paste(pixel, (x, y))
    sheet.draw.rectangle((x - 1, y - 1, x + pixel.width, y + pixel.height), outline=DIM_INK)
    sheet.text((x + pixel.width + 20, y + 4), clip(answer, 22), 26)
    sheet.text((x + pixel.width + 20, y + 44), f"id {view.prediction.id} · confidence {view.confidence:.1%}", 14)
    sheet.text((x + pixel.width + 20, y + 66), f"RGB {view.prediction_pixel}", 13, DIM_INK)
    y += pixel.height + 34
    if view.top_k:
        y = top_k_table(sheet, view.top_k, x, y) + 8
    odds = view.images.get("probabilities")
    if odds is not None:
        y = sheet.heading(x, y, "softmax(T_logits)", "where the probability goes; ring: the argmax")
        y = sheet.paste(odds.image, x, y, OVERVIEW_RIGHT) + 6
        y = sheet.scale_bar(x, y, odds)
    bottom = max(left_bottom, y) + OVERVIEW_MARGIN
    return sheet.image.crop((0, 0, sheet.image.width, min(bottom, sheet.image.height)))


def overview_height(view: TraceView) -> int:
    """Header, token strip with its labels, the strips with scales, the heatmap, margins."""
    label_h = max((len(drawable(c.token.label)) * 8 for c in view.tokens if c.token), default=0)
    total = 4 * OVERVIEW_MARGIN + 110 + view.images["tokens"].image.height + min(label_h, 140) + 40
    total += 42 * len(view.missing)
    for key in [*view.strips, "logits"]:
        image = view.images.get(key)
        total += 26 + (image.image.height + 50 if image else 16)
    odds = view.images.get("probabilities")
    right = 110 + 26 + PREDICTION_BLOCK_PX + 34 + 70 + 24 * len(view.top_k) + (odds.image.height + 70 if odds else 0)
    return max(total, right + 2 * OVERVIEW_MARGIN)


def token_labels(sheet: Sheet, tokens: list[TokenCell], x: int, y: int, block: int) -> int:
    """Each token's label under its pixel, written downwards, where the pixels are wide enough for a line
    of text (else the page's token table has them); returns the y below the longest."""
    size, longest = 13, 0
    if block < size + 2:
        return y
    for cell in tokens:
        if cell.token is None:
            continue
        label = clip(drawable(cell.token.label), 20)
        stamp = Image.new("RGB", (round(sheet.width_of(label, size)) + 4, size + 6), BACKGROUND)
        ImageDraw.Draw(stamp).text((2, 1), label, font=font(size), fill=INK)
        turned = stamp.rotate(-90, expand=True)
        sheet.image.paste(turned, (x + cell.position * block + (block - turned.width) // 2, y))
        longest = max(longest, turned.height)
    return y + longest


def top_k_table(sheet: Sheet, candidates: list[Candidate], x: int, y: int) -> int:
    y = sheet.heading(x, y, f"top {len(candidates)}", "softmax of the T_logits read back")
    columns = (x, x + 30, x + 190, x + 250, x + 330)
    for column, label in zip(columns, ("#", "token", "id", "logit", "probability"), strict=True):
        sheet.text((column, y), label, 12, DIM_INK)
    y += 22
    bar_w = OVERVIEW_RIGHT - (columns[4] - x) - 56
    for c in candidates:
        sheet.text((columns[0], y), str(c.rank), 14, DIM_INK)
        sheet.text((columns[1], y), clip(c.token.label, 18), 14, MARKER if c.rank == 1 else INK)
        sheet.text((columns[2], y), str(c.token.id), 14)
        sheet.text((columns[3], y), f"{c.logit:.3f}", 14)
        bar = max(1, round(bar_w * c.probability))
        sheet.draw.rectangle((columns[4], y + 5, columns[4] + bar, y + 14), fill=DIVERGING_ANCHORS[-3])
        sheet.text((columns[4] + bar + 6, y), f"{c.probability:.1%}", 13)
        y += 24
    return y + 10
