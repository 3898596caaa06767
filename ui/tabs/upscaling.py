"""The Upscaling tab (A1111's "Extras"): a single picture, several uploaded at once, or a folder on
the server; scale by or scale to (crop to fit); upscaler 1, and upscaler 2 with its visibility.
Layout and wiring here; the job is `engine.upscale.extras`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from engine.upscale.extras import ExtrasParams
from ui.common import EngineLike, check_finite
from ui.handlers.inputs import as_number, open_picture
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import GenInfo, follow_job
from ui.widgets.generation_panel import to_outputs

TAB = "extras"
MODES = ("Single image", "Batch process", "Batch from directory")


@dataclass
class ExtrasUI:
    image: gr.Image
    results: Any
    gen_info: gr.State


def build_extras_params(values: dict[str, Any]) -> ExtrasParams:
    return ExtrasParams(
        resize_mode=1 if values.get("resize") == "Scale to" else 0,
        upscaling_resize=values.get("upscaling_resize", 2.0),
        upscaling_resize_w=as_number(values.get("upscaling_resize_w", 512)),
        upscaling_resize_h=as_number(values.get("upscaling_resize_h", 512)),
        upscaling_crop=bool(values.get("upscaling_crop", True)),
        upscaler_1=values.get("upscaler_1") or "None",
        upscaler_2=values.get("upscaler_2") or "None",
        upscaler_2_visibility=values.get("upscaler_2_visibility", 0.0),
    )


def submit_extras(engine: EngineLike, values: dict[str, Any]) -> Any:
    """The job the tab's values describe (ValueError for what is missing)."""
    check_finite(values)
    params = build_extras_params(values)
    mode = values.get("mode") or MODES[0]
    if mode == "Batch from directory":
        if not values.get("input_dir") or not values.get("output_dir"):
            raise ValueError("Batch from directory: give an input folder and an output folder")
        return engine.submit_extras_folder(
            params, Path(str(values["input_dir"]).strip()), Path(str(values["output_dir"]).strip())
        )
    if mode == "Batch process":
        files = values.get("files") or []
        pictures = [open_picture(getattr(f, "name", f), "Batch process") for f in files]
    else:
        pictures = [open_picture(values.get("image"), "Upscaling")]
    pictures = [p for p in pictures if p is not None]
    if not pictures:
        raise ValueError("Upscaling: add a picture first")
    return engine.submit_extras(params, pictures)


FIELDS = (
    "mode",
    "image",
    "files",
    "input_dir",
    "output_dir",
    "resize",
    "upscaling_resize",
    "upscaling_resize_w",
    "upscaling_resize_h",
    "upscaling_crop",
    "upscaler_1",
    "upscaler_2",
    "upscaler_2_visibility",
)


def build_extras_tab(engine: EngineLike, jobs: SessionJobs) -> ExtrasUI:
    from ui.widgets.generation_panel import build_results

    c: dict[str, Any] = {}
    with gr.Row(elem_id=f"{TAB}_main"):
        with gr.Column(scale=1):
            c["mode"] = gr.State(MODES[0])
            with gr.Tabs(elem_id=f"{TAB}_mode_tabs"):
                with gr.Tab("Single image", elem_id=f"{TAB}_single") as t_single:
                    c["image"] = gr.Image(
                        label="Source",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        format="png",
                        height=420,
                        elem_id=f"{TAB}_image",
                    )
                with gr.Tab("Batch process", elem_id=f"{TAB}_batch") as t_batch:
                    c["files"] = gr.File(label="Batch process", file_count="multiple", elem_id=f"{TAB}_files")
                with gr.Tab("Batch from directory", elem_id=f"{TAB}_folder") as t_folder:
                    c["input_dir"] = gr.Textbox(label="Input directory", elem_id=f"{TAB}_input_dir")
                    c["output_dir"] = gr.Textbox(label="Output directory", elem_id=f"{TAB}_output_dir")
            for tab_component, name in zip((t_single, t_batch, t_folder), MODES, strict=True):
                tab_component.select(
                    lambda name=name: name, outputs=c["mode"], queue=False, api_visibility="private"
                )
            c["resize"] = gr.Radio(
                ["Scale by", "Scale to"], value="Scale by", label="Resize", elem_id=f"{TAB}_resize"
            )
            c["upscaling_resize"] = gr.Slider(
                1, 8, value=2, step=0.05, label="Resize", buttons=[], elem_id=f"{TAB}_upscaling_resize"
            )
            with gr.Row(visible=False) as scale_to:
                c["upscaling_resize_w"] = gr.Number(
                    512, precision=0, label="Width", elem_id=f"{TAB}_resize_w"
                )
                c["upscaling_resize_h"] = gr.Number(
                    512, precision=0, label="Height", elem_id=f"{TAB}_resize_h"
                )
                c["upscaling_crop"] = gr.Checkbox(True, label="Crop to fit", elem_id=f"{TAB}_crop")
            with gr.Row():
                names = engine.upscaler_names()
                c["upscaler_1"] = gr.Dropdown(
                    names, value="Lanczos", label="Upscaler 1", elem_id=f"{TAB}_upscaler_1"
                )
                c["upscaler_2"] = gr.Dropdown(
                    names, value="None", label="Upscaler 2", elem_id=f"{TAB}_upscaler_2"
                )
                refresh = gr.Button("🔄", min_width=40, scale=0, elem_id=f"{TAB}_refresh")
            c["upscaler_2_visibility"] = gr.Slider(
                0,
                1,
                value=0,
                step=0.001,
                label="Upscaler 2 visibility",
                buttons=[],
                elem_id=f"{TAB}_upscaler_2_visibility",
            )
            generate = gr.Button("Generate", variant="primary", elem_id=f"{TAB}_generate")
        with gr.Column(scale=1):
            results = build_results(TAB, send_targets=("img2img", "inpaint"))

    c["resize"].change(
        lambda how: (gr.update(visible=how == "Scale by"), gr.update(visible=how == "Scale to")),
        inputs=c["resize"],
        outputs=[c["upscaling_resize"], scale_to],
        queue=False,
        api_visibility="private",
    )

    def on_refresh() -> tuple[Any, Any]:
        names = engine.upscaler_names()
        return gr.Dropdown(choices=names), gr.Dropdown(choices=names)

    refresh.click(
        on_refresh, outputs=[c["upscaler_1"], c["upscaler_2"]], queue=False, api_visibility="private"
    )
    gen_info = gr.State(GenInfo())

    def on_generate(request: gr.Request, *values: Any) -> Iterator[tuple[Any, ...]]:
        named = dict(zip(FIELDS, values, strict=True))
        session = f"{TAB}:{request.session_hash or ''}"
        for update in follow_job(jobs, session, lambda: submit_extras(engine, named)):
            if update.message:
                gr.Warning(update.message)
            # to_outputs' first five are (progress, preview, gallery, infotext, gen_info); the
            # Upscaling tab has no Interrupt/Skip, only Generate, hidden while it runs.
            yield to_outputs(update)[:5] + (gr.update(visible=not update.running),)

    generate.click(
        on_generate,
        inputs=[c[name] for name in FIELDS],
        outputs=[results.progress, results.preview, results.gallery, results.infotext, gen_info, generate],
        show_progress="hidden",
        concurrency_limit=None,
        api_visibility="private",
    )
    return ExtrasUI(c["image"], results, gen_info)
