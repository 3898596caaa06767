"""SD upscale (A1111's built-in img2img script). The work is in tiles.py; this file declares the
arguments (in A1111's order, so positional `script_args` from A1111 clients line up), lays out
their controls and registers the script."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.plugins.args import ExtensionArgs
from engine.schema.params import field_limits

from .tiles import TITLE, run

INFO = "Will upscale the picture by the selected scale factor; use width and height to set the tile size"


class SDUpscaleArgs(ExtensionArgs):
    info: str | None = None  # A1111's info line: its slot keeps positional args in A1111's order
    overlap: int = Field(64, ge=0, le=256, json_schema_extra={"step": 16}, description="Tile overlap, px")
    upscaler_index: int | str = Field("Lanczos", description="Upscaler: a name, or A1111's index in the list")
    scale_factor: float = Field(2.0, ge=1.0, le=4.0, json_schema_extra={"step": 0.05})


def build_ui(ext: Any) -> dict[str, Any]:
    import gradio as gr

    names = ext.engine_names()
    upscalers = [n for n in (names.upscalers if names else ("Lanczos", "Nearest")) if n != "None"]
    overlap, scale = field_limits("overlap", SDUpscaleArgs), field_limits("scale_factor", SDUpscaleArgs)
    built: dict[str, Any] = {"info": gr.HTML(f"<p>{INFO}</p>")}
    with gr.Row():
        built["scale_factor"] = gr.Slider(
            scale["minimum"], scale["maximum"], value=scale["default"], step=scale["step"],
            label="Scale Factor", buttons=[],
        )  # fmt: skip
        built["overlap"] = gr.Slider(
            overlap["minimum"], overlap["maximum"], value=overlap["default"], step=overlap["step"],
            label="Tile overlap", buttons=[],
        )  # fmt: skip
    built["upscaler_index"] = gr.Dropdown(upscalers, value="Lanczos", label="Upscaler")
    return built


def setup(ext: Any) -> None:
    ext.script(TITLE, run, ui=lambda: build_ui(ext), tabs=("img2img",), args=SDUpscaleArgs)
