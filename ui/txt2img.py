"""The txt2img tab: prompt boxes, sampling controls, Generate/Interrupt/Skip, live progress, gallery.

Only layout and wiring live here (the shared pieces in `ui.generation_panel`); what the buttons do
is in `ui.txt2img_run` (plain functions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.common import EngineLike
from ui.controlnet import build_units_panel
from ui.generation_panel import (
    PROMPT_PLACEHOLDER,
    Fields,
    Results,
    build_prompt_row,
    build_results,
    build_sampling_controls,
    wire_generation,
)
from ui.progress import SessionJobs
from ui.txt2img_run import PARAM_FIELDS, run_txt2img

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

    @property
    def gallery(self) -> gr.Gallery:
        return self.results.gallery


def build_txt2img_tab(engine: EngineLike, jobs: SessionJobs, *, tab: str = TAB) -> Txt2ImgUI:
    """Lay out the tab inside the current gr.Tab context and wire its events. `tab="controlnet"`
    builds the ControlNet tab: txt2img with the ControlNet units open in front."""
    f: Fields = {}
    row = build_prompt_row(engine, tab, f)
    with gr.Row(elem_id=f"{tab}_main"):
        with gr.Column(scale=1, elem_id=f"{tab}_settings"):
            seed_buttons = build_sampling_controls(engine, tab, f)
            control_inputs = build_units_panel(engine, tab, f, open_=tab == "controlnet")
        with gr.Column(scale=1, elem_id=f"{tab}_results"):
            results = build_results(tab)
    count = len(PARAM_FIELDS)

    def run(session: str, values: tuple[Any, ...]):
        return run_txt2img(engine, jobs, session, values[:count], control_values=values[count:])

    inputs = [f[name] for name in PARAM_FIELDS] + control_inputs
    gen_info, recount_after = wire_generation(engine, jobs, tab, f, row, results, seed_buttons, inputs, run)
    return Txt2ImgUI(f, row.generate, row.interrupt, row.skip, results, gen_info, recount_after)
