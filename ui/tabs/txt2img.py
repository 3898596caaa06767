"""The txt2img tab: prompt boxes, sampling controls, Generate/Interrupt/Skip, live progress, gallery.

Only layout and wiring live here (the shared pieces in `ui.widgets.generation_panel`); what the buttons do
is in `ui.handlers.txt2img` (plain functions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.schema.params import GenerationParams
from ui.common import EngineLike
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import PARAM_FIELDS, run_txt2img
from ui.widgets.controlnet_units import build_units_panel
from ui.widgets.extension_panels import build_txt2img_extensions
from ui.widgets.generation_panel import (
    PROMPT_PLACEHOLDER,
    Fields,
    Results,
    build_prompt_row,
    build_results,
    build_sampling_controls,
    slider,
    wire_generation,
)
from ui.widgets.refiner import build_refiner_panel

__all__ = ["PROMPT_PLACEHOLDER", "Txt2ImgUI", "build_txt2img_tab"]
TAB = "txt2img"


@dataclass
class Txt2ImgUI:
    """The components other tabs need (PNG Info's "Send to txt2img" fills `fields`)."""

    fields: Fields
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    results: Results
    gen_info: gr.State
    # Chain a recount of both token counters after an event that sets the prompts from code
    # (a function's output does not fire the boxes' change event).
    recount_after: Callable[[Any], None]
    size_picker: gr.Dropdown  # the family's sizes (ui.widgets.size_picker)

    @property
    def gallery(self) -> gr.Gallery:
        return self.results.gallery


def build_hires_panel(engine: EngineLike, tab: str, f: Fields) -> None:
    """A1111's "Hires. fix" accordion; fills the HIRES_FIELDS of `f`."""
    from engine.upscale.upscalers import LATENT_MODES

    with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hires"):
        f["enable_hr"] = gr.Checkbox(label="Enable hires fix", elem_id=f"{tab}_enable_hr")
        with gr.Row():
            upscalers = [*LATENT_MODES, *(n for n in engine.upscaler_names() if n != "None")]
            f["hr_upscaler"] = gr.Dropdown(
                upscalers, value="Latent", label="Upscaler", elem_id=f"{tab}_hr_upscaler"
            )
            f["hr_second_pass_steps"] = slider(tab, "hr_second_pass_steps", "Hires steps")
            # hires fix's own strength: GenerationParams' default, not img2img's
            f["denoising_strength"] = slider(
                tab, "denoising_strength", "Denoising strength", schema=GenerationParams
            )
        with gr.Row():
            f["hr_scale"] = slider(tab, "hr_scale", "Upscale by")
            f["hr_resize_x"] = slider(tab, "hr_resize_x", "Resize width to", step=8)
            f["hr_resize_y"] = slider(tab, "hr_resize_y", "Resize height to", step=8)
        with gr.Row():
            f["hr_sampler_name"] = gr.Dropdown(
                ["Use same sampler", *engine.sampler_names()],
                value="Use same sampler",
                label="Hires sampling method",
                elem_id=f"{tab}_hr_sampler",
            )
            f["hr_scheduler"] = gr.Dropdown(
                ["Use same scheduler", *engine.schedule_names()],
                value="Use same scheduler",
                label="Hires schedule type",
                elem_id=f"{tab}_hr_scheduler",
            )
        f["hr_prompt"] = gr.Textbox(
            label="Hires prompt (empty: the prompt)", lines=2, elem_id=f"{tab}_hr_prompt"
        )
        f["hr_negative_prompt"] = gr.Textbox(
            label="Hires negative prompt (empty: the negative prompt)",
            lines=2,
            elem_id=f"{tab}_hr_neg_prompt",
        )


def build_txt2img_tab(engine: EngineLike, jobs: SessionJobs, *, tab: str = TAB) -> Txt2ImgUI:
    """Lay out the tab inside the current gr.Tab context and wire its events. `tab="controlnet"`
    builds the ControlNet tab: txt2img with the ControlNet units open in front."""
    f: Fields = {}
    row = build_prompt_row(engine, tab, f)
    with gr.Row(elem_id=f"{tab}_main"):
        with gr.Column(scale=1, elem_id=f"{tab}_settings"):
            seed_buttons = build_sampling_controls(engine, tab, f)
            build_hires_panel(engine, tab, f)
            build_refiner_panel(engine, tab, f)
            control_inputs = build_units_panel(engine, tab, f, open_=tab == "controlnet")
            script, extensions = build_txt2img_extensions(engine, tab)
        with gr.Column(scale=1, elem_id=f"{tab}_results"):
            results = build_results(tab)
    count, units = len(PARAM_FIELDS), len(control_inputs)

    def run(session: str, values: tuple[Any, ...]):
        extension_args, call = extensions.decode(values[count + units + 1 :], values[count + units])
        return run_txt2img(
            engine,
            jobs,
            session,
            values[:count],
            control_values=values[count : count + units],
            extension_args=extension_args,
            script=call,
        )

    inputs = [f[name] for name in PARAM_FIELDS] + control_inputs + [script] + extensions.components
    gen_info, recount_after = wire_generation(engine, jobs, tab, f, row, results, seed_buttons, inputs, run)
    picker = seed_buttons["size_picker"]
    return Txt2ImgUI(f, row.generate, row.interrupt, row.skip, results, gen_info, recount_after, picker)
