"""The Prompt matrix script (A1111's): the combinations of a prompt's `|` parts as a grid.
The logic is in matrix.py; this file declares its arguments, lays out its controls and registers
it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engine.plugins.args import ExtensionArgs
from engine.schema.params import field_limits

from .matrix import TITLE, run


class PromptMatrixArgs(ExtensionArgs):
    """In A1111's order, so positional `script_args` from A1111 clients line up."""

    put_at_start: bool = False
    different_seeds: bool = False
    prompt_type: Literal["positive", "negative"] = "positive"
    variations_delimiter: Literal["comma", "space"] = "comma"
    margin_size: int = Field(0, ge=0, le=500, json_schema_extra={"step": 2})


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
        margin = field_limits("margin_size", PromptMatrixArgs)
        built["margin_size"] = gr.Slider(
            margin["minimum"], margin["maximum"], value=margin["default"], step=margin["step"],
            label="Grid margins (px)",
        )  # fmt: skip
    return built


def setup(ext) -> None:
    ext.script(TITLE, run, ui=build_ui, tabs=("txt2img", "img2img"), args=PromptMatrixArgs)
