"""The live page at `/` (page.html, page.js beside this module, served as one self-contained document: no
CDN, no other request but the API's own) and the trace fragment it shows: the images `pxgl viz` draws,
by engine/visuals, from the textures the GPU read back."""

import json
from functools import cache
from importlib import resources
from typing import Any

from ..executors import Trace
from ..spec import ModelSpec
from ..transformer.gpu.trace import TransformerTrace
from ..visuals import DEFAULT_TOP_K, trace_view
from ..visuals.page import PAGE_STYLE, trace_html
from ..visuals.trace import TokenBytes
from ..visuals.transformer import transformer_view
from ..visuals.transformer_page import transformer_html


@cache
def asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def page_html(models: list[str]) -> str:
    # "</" inside a script ends it: escape it in the data.
    names = json.dumps(models).replace("</", "<\\/")
    script = asset("page.js").replace("/*MODELS*/[]", names)
    return asset("page.html").replace("/*STYLE*/", PAGE_STYLE).replace("/*SCRIPT*/", script)


def trace_fragment(
    trace: Trace,
    spec: ModelSpec,
    prompt: str,
    prompt_tokens: int,
    token_bytes: TokenBytes,
    about: dict[str, str],
) -> tuple[str, dict[str, Any]]:
    """The page's view of one prompt's run (HTML, as `pxgl viz` writes it) and its viz.json record."""
    view = trace_view(
        trace, spec, prompt=prompt, prompt_tokens=prompt_tokens, token_bytes=token_bytes, k=DEFAULT_TOP_K, about=about
    )
    pngs = {key: image.png() for key, image in view.images.items()}
    return trace_html(view, pngs), view.record()


def transformer_trace_fragment(
    trace: TransformerTrace, vocab_size: int, prompt: str, token_bytes: TokenBytes, about: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """A version-2 prompt's trace as the page shows it (the HTML section `pxgl viz` writes, docs/FORMATS.md
    §14.8) and its viz.json record: the same {"html", "view"} the page draws for version 1."""
    view = transformer_view(trace, vocab_size, prompt=prompt, token_bytes=token_bytes, about=about, k=DEFAULT_TOP_K)
    pngs = {key: image.png() for key, image in view.images.items()}
    return transformer_html(view, pngs), view.record()
