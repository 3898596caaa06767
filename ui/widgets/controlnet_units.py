"""The ControlNet units panel (an accordion in txt2img / img2img / Inpaint, open in the ControlNet
tab): one sub-tab per unit with A1111's controls, a preview of the preprocessed map, and the
threshold sliders that follow the chosen preprocessor. What the values mean is
`ui.handlers.controlnet`; the engine does the work."""

from __future__ import annotations

from typing import Any

import gradio as gr

from engine.controlnet.units import CONTROL_MODES, HR_OPTIONS, RESIZE_MODES
from ui.common import EngineLike, error_message, message_html
from ui.handlers.controlnet import UNIT_FIELDS, preprocessor_choices, threshold_updates, unit_from_values
from ui.handlers.inputs import open_picture


def build_units_panel(engine: EngineLike, tab: str, f: dict[str, Any], *, open_: bool = False) -> list[Any]:
    """Lay out the units; returns their components flat, UNIT_FIELDS per unit, for the run's inputs."""
    count = engine.settings.control_net_unit_count
    flat: list[Any] = []
    with gr.Accordion("ControlNet", open=open_, elem_id=f"{tab}_controlnet"):
        with gr.Tabs():
            for index in range(count):
                with gr.Tab(f"ControlNet Unit {index}", elem_id=f"{tab}_controlnet_unit_{index}"):
                    flat += _unit(engine, tab, index, f)
    return flat


def _unit(engine: EngineLike, tab: str, index: int, f: dict[str, Any]) -> list[Any]:
    prefix = f"{tab}_cn{index}"
    c: dict[str, Any] = {}
    with gr.Row():
        c["image"] = gr.Image(
            label="Control picture" + (" (empty: the img2img picture)" if tab == "img2img" else ""),
            type="filepath",
            sources=["upload", "clipboard"],
            format="png",
            height=260,
            elem_id=f"{prefix}_image",
        )
        preview = gr.Image(
            label="Preprocessor preview",
            interactive=False,
            format="png",
            height=260,
            elem_id=f"{prefix}_preview",
        )
    with gr.Row():
        c["enabled"] = gr.Checkbox(label="Enable", elem_id=f"{prefix}_enable")
        c["pixel_perfect"] = gr.Checkbox(label="Pixel Perfect", elem_id=f"{prefix}_pixel_perfect")
        preview_button = gr.Button("💥 Preview", size="sm", elem_id=f"{prefix}_preview_button", min_width=100)
    with gr.Row():
        c["module"] = gr.Dropdown(
            preprocessor_choices(engine.preprocessors()),
            value="none",
            label="Preprocessor",
            elem_id=f"{prefix}_module",
        )
        c["model"] = gr.Dropdown(
            ["None", *engine.controlnet_models()], value="None", label="Model", elem_id=f"{prefix}_model"
        )
        refresh = gr.Button("🔄", elem_id=f"{prefix}_refresh", min_width=40, scale=0)
    message = gr.HTML("", elem_id=f"{prefix}_message")
    c["weight"] = gr.Slider(
        0, 2, value=1, step=0.05, label="Control Weight", buttons=[], elem_id=f"{prefix}_weight"
    )
    with gr.Row():
        c["guidance_start"] = gr.Slider(
            0,
            1,
            value=0,
            step=0.01,
            label="Starting Control Step",
            buttons=[],
            elem_id=f"{prefix}_guidance_start",
        )
        c["guidance_end"] = gr.Slider(
            0,
            1,
            value=1,
            step=0.01,
            label="Ending Control Step",
            buttons=[],
            elem_id=f"{prefix}_guidance_end",
        )
    with gr.Row():
        c["processor_res"] = gr.Slider(
            64,
            2048,
            value=512,
            step=8,
            label="Preprocessor Resolution",
            buttons=[],
            elem_id=f"{prefix}_processor_res",
        )
        c["threshold_a"] = gr.Slider(visible=False, buttons=[], elem_id=f"{prefix}_threshold_a")
        c["threshold_b"] = gr.Slider(visible=False, buttons=[], elem_id=f"{prefix}_threshold_b")
    c["control_mode"] = gr.Radio(
        list(CONTROL_MODES), value="Balanced", label="Control Mode", elem_id=f"{prefix}_control_mode"
    )
    c["resize_mode"] = gr.Radio(
        list(RESIZE_MODES), value="Crop and Resize", label="Resize Mode", elem_id=f"{prefix}_resize_mode"
    )
    c["hr_option"] = gr.Radio(
        list(HR_OPTIONS),
        value="Both",
        label="Hires-fix option",
        visible=tab != "img2img",  # only txt2img has a hires pass
        elem_id=f"{prefix}_hr_option",
    )
    events = dict(queue=False, api_visibility="private")

    def on_module(module: str) -> tuple[Any, Any]:
        a, b = threshold_updates(module)
        return gr.update(**a), gr.update(**b)

    c["module"].change(on_module, inputs=c["module"], outputs=[c["threshold_a"], c["threshold_b"]], **events)
    c["image"].upload(lambda: True, outputs=c["enabled"], **events)  # A1111 enables a unit on upload
    refresh.click(
        lambda: gr.Dropdown(choices=["None", *engine.controlnet_models()]), outputs=c["model"], **events
    )
    fallback = f.get("init_image")

    def on_preview(*values: Any) -> tuple[Any, str]:
        named = dict(zip(UNIT_FIELDS, values[: len(UNIT_FIELDS)], strict=True))
        width, height, init = values[len(UNIT_FIELDS) :]
        try:
            picture = open_picture(named["image"], "Control picture") or open_picture(init, "img2img picture")
            if picture is None:
                raise ValueError("Upload a control picture first.")
            unit = unit_from_values({**named, "enabled": True})
            return engine.preview_control(unit, picture, int(width), int(height)), ""
        except Exception as exc:
            return gr.skip(), message_html(error_message(exc))

    extra_inputs = [f["width"], f["height"], fallback if fallback is not None else gr.State(None)]
    preview_button.click(
        on_preview,
        inputs=[c[name] for name in UNIT_FIELDS] + extra_inputs,
        outputs=[preview, message],
        api_visibility="private",
    )
    return [c[name] for name in UNIT_FIELDS]
