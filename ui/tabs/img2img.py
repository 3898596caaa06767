"""The img2img tab (modes img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload, Batch) and the
top-level Inpaint tab (the brush mask editor front and centre). Both are one builder: the Inpaint
tab is the img2img tab with only the Inpaint mode. Only layout and wiring live here; what Generate
does is `ui.handlers.img2img`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.schema.params import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES
from ui.common import EngineLike
from ui.handlers.img2img import ALL_FIELDS, INPAINT_MODES, MODES, run_img2img
from ui.handlers.progress import SessionJobs
from ui.widgets.controlnet_units import build_units_panel
from ui.widgets.extension_panels import (
    NO_SCRIPT,
    ExtensionInputs,
    build_accordions,
    build_script_groups,
    script_titles,
)
from ui.widgets.generation_panel import (
    Fields,
    Results,
    build_prompt_row,
    build_results,
    build_sampling_controls,
    slider,
    wire_generation,
)
from ui.widgets.refiner import build_refiner_panel

EDITOR_HEIGHT = 520


@dataclass
class Img2ImgUI:
    fields: Fields
    tab: str
    results: Results
    gen_info: gr.State
    recount_after: Any
    mode_tabs: gr.Tabs | None
    size_picker: gr.Dropdown  # the family's sizes (ui.widgets.size_picker)


def _editor(tab: str, name: str, *, mask_brush: bool) -> gr.ImageEditor:
    """A picture editor. The inpainting brush paints white on its own layer (its alpha is the
    mask); the sketch brush offers colours. PNG, never WebP: the kept pixels must stay exact."""
    brush = (
        gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24)
        if mask_brush
        else gr.Brush(color_mode="defaults", default_size=12)
    )
    return gr.ImageEditor(
        type="pil",
        image_mode="RGBA",
        sources=["upload", "clipboard"],
        brush=brush,
        eraser=gr.Eraser(default_size=24),
        layers=False,
        transforms=[],
        format="png",
        height=EDITOR_HEIGHT,
        label=name,
        elem_id=f"{tab}_{name.lower().replace(' ', '_')}_editor",
    )


def _inputs_panel(tab: str, f: Fields, only_inpaint: bool) -> tuple[gr.State, gr.Tabs | None]:
    """The picture inputs, one sub-tab per mode; a State remembers which mode is selected."""
    if only_inpaint:
        mode = gr.State("Inpaint")
        f["inpaint"] = _editor(tab, "Inpaint", mask_brush=True)
        return mode, None
    mode = gr.State("img2img")
    with gr.Tabs(elem_id=f"{tab}_mode_tabs") as tabs:
        with gr.Tab("img2img", id="img2img", elem_id=f"{tab}_mode_img2img") as t_img:
            f["init_image"] = gr.Image(
                label="Picture",
                type="filepath",
                image_mode="RGBA",
                sources=["upload", "clipboard"],
                format="png",
                height=EDITOR_HEIGHT,
                elem_id=f"{tab}_init_image",
            )
        with gr.Tab("Sketch", id="sketch", elem_id=f"{tab}_mode_sketch") as t_sketch:
            f["sketch"] = _editor(tab, "Sketch", mask_brush=False)
        with gr.Tab("Inpaint", id="inpaint", elem_id=f"{tab}_mode_inpaint") as t_inpaint:
            f["inpaint"] = _editor(tab, "Inpaint", mask_brush=True)
        with gr.Tab("Inpaint sketch", id="inpaint_sketch", elem_id=f"{tab}_mode_inpaint_sketch") as t_isketch:
            f["inpaint_sketch"] = _editor(tab, "Inpaint sketch", mask_brush=False)
        with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id=f"{tab}_mode_inpaint_upload") as t_upload:
            with gr.Row():
                f["upload_image"] = gr.Image(
                    label="Picture",
                    type="filepath",
                    image_mode="RGBA",
                    format="png",
                    elem_id=f"{tab}_upload_image",
                )
                f["upload_mask"] = gr.Image(
                    label="Mask (white = repaint)",
                    type="filepath",
                    image_mode="RGBA",
                    format="png",
                    elem_id=f"{tab}_upload_mask",
                )
        with gr.Tab("Batch", id="batch", elem_id=f"{tab}_mode_batch") as t_batch:
            gr.Markdown("Process every picture of a folder on the server; results keep the file names.")
            f["batch_input_dir"] = gr.Textbox(label="Input folder", elem_id=f"{tab}_batch_input_dir")
            f["batch_output_dir"] = gr.Textbox(label="Output folder", elem_id=f"{tab}_batch_output_dir")
            f["batch_mask_dir"] = gr.Textbox(
                label="Inpaint mask folder (optional: masks named like the pictures)",
                elem_id=f"{tab}_batch_mask_dir",
            )
            f["batch_use_png_info"] = gr.Checkbox(
                label="Take prompts, seed, sampler, steps and CFG from each picture's PNG info",
                elem_id=f"{tab}_batch_use_png_info",
            )
    for tab_component, name in zip(
        (t_img, t_sketch, t_inpaint, t_isketch, t_upload, t_batch), MODES, strict=True
    ):
        tab_component.select(lambda name=name: name, outputs=mode, queue=False, api_visibility="private")
    return mode, tabs


def _inpaint_options(tab: str, f: Fields, visible: bool) -> gr.Group:
    with gr.Group(visible=visible, elem_id=f"{tab}_inpaint_controls") as group:
        with gr.Row():
            f["mask_blur"] = slider(tab, "mask_blur", "Mask blur")
            f["mask_alpha"] = gr.Slider(
                0,
                100,
                value=0,
                step=1,
                label="Mask transparency (Inpaint sketch)",
                elem_id=f"{tab}_mask_alpha",
                buttons=[],
            )
        f["inpainting_mask_invert"] = gr.Radio(
            list(MASK_MODES), value=MASK_MODES[0], label="Mask mode", elem_id=f"{tab}_mask_mode"
        )
        f["inpainting_fill"] = gr.Radio(
            list(MASKED_CONTENT), value="original", label="Masked content", elem_id=f"{tab}_inpainting_fill"
        )
        with gr.Row():
            f["inpaint_full_res"] = gr.Radio(
                list(INPAINT_AREAS),
                value=INPAINT_AREAS[0],
                label="Inpaint area",
                elem_id=f"{tab}_inpaint_full_res",
            )
            f["inpaint_full_res_padding"] = slider(
                tab, "inpaint_full_res_padding", "Only masked padding, pixels"
            )
    return group


def _script_panel(engine: EngineLike, tab: str, f: Fields, extensions: ExtensionInputs) -> None:
    choices = [NO_SCRIPT, *script_titles(engine, "img2img")]  # Outpainting, SD upscale, ... are extensions
    f["script"] = gr.Dropdown(choices, value=NO_SCRIPT, label="Script", elem_id=f"{tab}_script")
    build_script_groups(engine, "img2img", tab, f["script"], extensions)


def build_img2img_tab(engine: EngineLike, jobs: SessionJobs, *, tab: str = "img2img") -> Img2ImgUI:
    """`tab="img2img"`: every mode; `tab="inpaint"`: the Inpaint tab (inpainting only)."""
    only_inpaint = tab == "inpaint"
    f: Fields = {}
    row = build_prompt_row(engine, tab, f)
    with gr.Row(elem_id=f"{tab}_main"):
        with gr.Column(scale=1, elem_id=f"{tab}_settings"):
            mode, mode_tabs = _inputs_panel(tab, f, only_inpaint)
            f["mode"] = mode
            f["resize_mode"] = gr.Radio(
                list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode", elem_id=f"{tab}_resize_mode"
            )
            f["resize_by"] = gr.Radio(
                ["Resize to", "Resize by"], value="Resize to", label="Size", elem_id=f"{tab}_resize_by"
            )
            f["scale_by"] = gr.Slider(
                0.05,
                4.0,
                value=1.0,
                step=0.05,
                label="Scale",
                visible=False,
                buttons=[],
                elem_id=f"{tab}_scale_by",
            )
            seed_buttons = build_sampling_controls(engine, tab, f)
            f["denoising_strength"] = slider(tab, "denoising_strength", "Denoising strength")
            build_refiner_panel(engine, tab, f)
            control_inputs = build_units_panel(engine, tab, f)
            inpaint_group = _inpaint_options(tab, f, visible=only_inpaint)
            extensions = ExtensionInputs()
            build_accordions(engine, "img2img", tab, extensions)
            if not only_inpaint:  # the Inpaint tab has no scripts: their fields get placeholders below
                _script_panel(engine, tab, f, extensions)
        with gr.Column(scale=1, elem_id=f"{tab}_results"):
            results = build_results(tab)
    for name in ALL_FIELDS:  # the Inpaint tab has no other modes' inputs: empty placeholders
        f.setdefault(name, gr.State(None))

    f["resize_by"].change(
        lambda how: (gr.update(visible=how == "Resize by"),) + (gr.update(visible=how == "Resize to"),) * 2,
        inputs=f["resize_by"],
        outputs=[f["scale_by"], f["width"], f["height"]],
        queue=False,
        api_visibility="private",
    )
    if not only_inpaint:
        mode.change(
            lambda m: gr.update(visible=m in INPAINT_MODES or m == "Batch"),
            inputs=mode,
            outputs=inpaint_group,
            queue=False,
            api_visibility="private",
        )

    count, units = len(ALL_FIELDS), len(control_inputs)

    def run(session: str, values: tuple[Any, ...]):
        named = dict(zip(ALL_FIELDS, values[:count], strict=True))
        extension_args, call = extensions.decode(values[count + units :], named.get("script"))
        named["extension_args"], named["script_call"] = extension_args, call
        return run_img2img(engine, jobs, session, named, control_values=values[count : count + units])

    inputs = [f[name] for name in ALL_FIELDS] + control_inputs + extensions.components
    gen_info, recount_after = wire_generation(engine, jobs, tab, f, row, results, seed_buttons, inputs, run)
    return Img2ImgUI(f, tab, results, gen_info, recount_after, mode_tabs, seed_buttons["size_picker"])
