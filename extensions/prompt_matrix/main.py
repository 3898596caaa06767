"""The Prompt matrix script (A1111's): the combinations of a prompt's `|` parts as a grid.
The logic is in matrix.py; this file registers it and lays out its controls."""

from __future__ import annotations

from typing import Any

from .matrix import TITLE, run


def build_ui() -> dict[str, Any]:
    import gradio as gr

    built: dict[str, Any] = {}
    with gr.Row():
        built["put_at_start"] = gr.Checkbox(False, label="Put variable parts at start of prompt")
        built["different_seeds"] = gr.Checkbox(False, label="Use different seed for each picture")
    with gr.Row():
        built["prompt_type"] = gr.Radio(["positive", "negative"], value="positive", label="Select prompt")
        built["variations_delimiter"] = gr.Radio(
            ["comma", "space"], value="comma", label="Select joining char"
        )
        built["margin_size"] = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)")
    return built


def setup(ext) -> None:
    ext.script(TITLE, run, ui=build_ui, tabs=("txt2img", "img2img"))
