"""The PNG Info tab: read the A1111 'parameters' text out of an image, show it parsed, and send it
to txt2img.

Parsing lives in `engine.schema.infotext` (one vocabulary for UI, API and files); this module only shows
its results. The image component hands over the uploaded file's path untouched
(`type="filepath"`, `image_mode=None`), because re-encoding it would drop the text chunk.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ui.common import error_message, message_html
from ui.handlers.txt2img import PARAM_FIELDS

# txt2img fields that "Send to txt2img" fills, in the order `infotext_to_fields` returns them: the
# generation fields before the batch controls (a pasted picture does not change the batch).
SEND_FIELDS = PARAM_FIELDS[: PARAM_FIELDS.index("n_iter")]


def read_parameters(path: str | Path | None) -> str:
    """The image's parameters text ('' when it has none). Raises ValueError for a non-image."""
    if not path:
        return ""
    from engine.schema.infotext import read_png_parameters  # lazily: keeps UI import light

    try:
        with Image.open(path) as image:
            image.verify()  # a clear "not an image" here; the reader below swallows errors
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read {Path(path).name} as an image: {exc}") from exc
    return read_png_parameters(path) or ""


def parsed_html(text: str) -> str:
    """The parsed key/values as a two-column table."""
    if not text:
        return message_html("No generation parameters found in this image.", "info")
    from engine.schema.infotext import parse_infotext  # never raises: images come from anywhere

    values = {key: value for key, value in parse_infotext(text).items() if value != ""}
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in values.items()
    )
    return f'<table class="atelier-pnginfo">{rows}</table>'


def show_png_info(path: str | None) -> tuple[str, str]:
    """Image path → (raw parameters text, parsed table html); errors become a message."""
    try:
        text = read_parameters(path)
    except ValueError as exc:
        return "", message_html(error_message(exc))
    if not path:
        return "", ""
    return text, parsed_html(text)


# What the dropdowns show where the params hold None: no separate hires sampler / schedule, no refiner.
_SHOWN_FOR_NONE = {
    "hr_sampler_name": "Use same sampler",
    "hr_scheduler": "Use same scheduler",
    "refiner_checkpoint": "None",
}


def infotext_to_fields(text: str, names: tuple[str, ...] = SEND_FIELDS) -> tuple[tuple[Any, ...], list[str]]:
    """Parameters text → (the values of the GenerationParams fields `names`, in that order,
    "Override settings" entries for the sampler parameters it sets). Raises ValueError when there
    is no text; keys that cannot be applied keep their defaults (params_from_infotext's rule), so
    a text without `Hires …` keys turns hires fix off."""
    if not text or not text.strip():
        raise ValueError("There are no parameters to send: drop a generated PNG first.")
    from engine.schema.infotext import override_entries, params_from_infotext

    params, _unknown = params_from_infotext(text)
    values = tuple(
        getattr(params, name) or _SHOWN_FOR_NONE.get(name, getattr(params, name)) for name in names
    )
    return values, override_entries(params)


def read_picture(path: str | None) -> Image.Image:
    """The PNG Info picture, for "Send to img2img"."""
    if not path:
        raise ValueError("There is no picture to send: drop one first.")
    with Image.open(path) as image:
        image.load()
        return image.copy()


def build_png_info_tab() -> tuple[gr.Textbox, gr.Button, gr.Button, gr.Image]:
    """Lay out the tab; returns (raw text box, "Send to txt2img" button, "Send to img2img" button,
    the picture) for app.py to wire."""
    with gr.Row(elem_id="pnginfo_main"):
        with gr.Column(scale=1):
            image = gr.Image(
                label="Source",
                type="filepath",
                image_mode=None,
                sources=["upload", "clipboard"],
                elem_id="pnginfo_image",
                height=420,
            )
        with gr.Column(scale=1):
            text = gr.Textbox(
                label="Parameters",
                lines=6,
                max_lines=20,
                interactive=False,
                elem_id="pnginfo_text",
                buttons=["copy"],
            )
            table = gr.HTML("", elem_id="pnginfo_parsed")
            with gr.Row():
                send = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                send_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
    image.change(show_png_info, inputs=image, outputs=[text, table], api_visibility="private")
    return text, send, send_img2img, image
