"""Outpainting (A1111's "Poor man's outpainting", an img2img script). The work is in canvas.py;
this file declares the arguments (in A1111's order, so positional `script_args` line up), lays out
their controls and registers the script."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.plugins.args import ExtensionArgs
from engine.schema.params import MASKED_CONTENT, field_limits

from .canvas import A1111_TITLE, DIRECTIONS, TITLE, run


class OutpaintingArgs(ExtensionArgs):
    pixels: int = Field(64, ge=8, le=256, json_schema_extra={"step": 8}, description="Pixels to expand")
    mask_blur: int = Field(8, ge=0, le=64, json_schema_extra={"step": 1})
    inpainting_fill: int | str = Field("fill", description="Masked content: a name, or A1111's index")
    direction: list[str] = Field(default_factory=lambda: list(DIRECTIONS), description="Sides to extend")


def build_ui() -> dict[str, Any]:
    import gradio as gr

    pixels, blur = field_limits("pixels", OutpaintingArgs), field_limits("mask_blur", OutpaintingArgs)
    built: dict[str, Any] = {}
    built["pixels"] = gr.Slider(
        pixels["minimum"], pixels["maximum"], value=pixels["default"], step=pixels["step"],
        label="Pixels to expand", buttons=[],
    )  # fmt: skip
    built["direction"] = gr.CheckboxGroup(
        list(DIRECTIONS), value=list(DIRECTIONS), label="Outpainting direction"
    )
    with gr.Row():
        built["mask_blur"] = gr.Slider(
            blur["minimum"], blur["maximum"], value=blur["default"], step=blur["step"],
            label="Mask blur", buttons=[],
        )  # fmt: skip
        built["inpainting_fill"] = gr.Radio(list(MASKED_CONTENT), value="fill", label="Masked content")
    return built


def setup(ext: Any) -> None:
    ext.script(TITLE, run, ui=build_ui, tabs=("img2img",), args=OutpaintingArgs, aliases=(A1111_TITLE,))
