"""A1111's "Refiner" accordion (txt2img and img2img tabs): the checkpoint the sampler continues on,
and the fraction of the steps after which it takes over."""

from __future__ import annotations

import gradio as gr

from ui.common import EngineLike
from ui.widgets.generation_panel import Fields, slider

NO_REFINER = "None"


def build_refiner_panel(engine: EngineLike, tab: str, f: Fields) -> None:
    """Fills `refiner_checkpoint` and `refiner_switch_at` of `f`."""
    try:
        titles = engine.list_checkpoints()
    except ValueError:  # no checkpoints at all: the page still opens
        titles = []
    with gr.Accordion("Refiner", open=False, elem_id=f"{tab}_refiner"):
        with gr.Row():
            f["refiner_checkpoint"] = gr.Dropdown(
                [NO_REFINER, *titles],
                value=NO_REFINER,
                label="Checkpoint",
                info="Continues the sampling from the switch on (an SDXL refiner for SDXL)",
                allow_custom_value=True,  # PNG Info sends A1111's "name [hash]"
                elem_id=f"{tab}_refiner_checkpoint",
            )
            f["refiner_switch_at"] = slider(tab, "refiner_switch_at", "Switch at")
