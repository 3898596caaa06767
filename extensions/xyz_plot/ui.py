"""The X/Y/Z plot's controls in the txt2img / img2img "Script" panel.

Choice axes (sampler, schedule type, checkpoint, VAE, hires upscaler) get a multiselect dropdown
instead of the values text. Its choices come from the engine, which `ui()` cannot see: they are
read from a names provider each time an axis type is picked (so a checkpoint dropped into the
folder after start-up shows up without a restart).

The provider: setup() hands `ext.engine_names` to `build_ui`, whose callbacks carry it (no
module state); it returns the current `engine.plugins.scripts.EngineNames`, or None when the
extension runs without an engine — then the sampler and schedule names come from the sampler
registry and the other lists hold only the built-in entries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from engine.plugins.scripts import EngineNames
from engine.schema.params import field_limits

from .args import DEFAULT_TYPES, XYZArgs
from .axes import AXIS_LABELS, axis_named

NamesProvider = Callable[[], EngineNames | None]


def no_engine() -> None:
    """The provider of an extension loaded without an engine (tests, a bare ExtensionManager)."""
    return None


def current_names(provider: NamesProvider = no_engine) -> EngineNames:
    """The names `provider()` gives now (called each time an axis type is picked), or the
    registry-only fallback when it gives None."""
    names = provider()
    if names is not None:
        return names
    from engine.sampling.registry import sampler_names, schedule_names

    return EngineNames(
        samplers=tuple(sampler_names()),
        schedulers=tuple(schedule_names()),
        checkpoints=(),
        vaes=("Automatic", "None"),
        hires_upscalers=("Latent",),
    )


def axis_controls(
    type_label: str, picks: list[str] | None = None, names: NamesProvider = no_engine
) -> tuple[Any, Any, Any]:
    """(values textbox, values dropdown, fill button) updates for an axis of `type_label`."""
    axis = axis_named(type_label)
    if axis.choices is None:
        return (
            gr.update(visible=not axis.is_nothing),
            gr.update(visible=False, value=[]),
            gr.update(visible=False),
        )
    choices = list(axis.choices(current_names(names)))
    kept = [p for p in (picks or []) if p in choices]
    return (
        gr.update(visible=False),
        gr.update(choices=choices, value=kept, visible=True),
        gr.update(visible=True),
    )


def fill_all(type_label: str, names: NamesProvider = no_engine) -> Any:
    """A1111's 📒 button: every choice of the axis."""
    axis = axis_named(type_label)
    return gr.update(value=list(axis.choices(current_names(names))) if axis.choices else [])


def swap(
    type_a, text_a, picks_a, type_b, text_b, picks_b, names: NamesProvider = no_engine
) -> tuple[Any, ...]:
    """Exchange two axes: types, texts and picks (each dropdown gets the choices of its new type)."""
    controls_a = axis_controls(type_b, picks_b, names)
    controls_b = axis_controls(type_a, picks_a, names)
    return (
        gr.update(value=type_b),
        gr.update(value=text_b, visible=controls_a[0]["visible"]),
        *controls_a[1:],
        gr.update(value=type_a),
        gr.update(value=text_a, visible=controls_b[0]["visible"]),
        *controls_b[1:],
    )


def build_ui(names: NamesProvider = no_engine) -> dict[str, Any]:
    """The controls, by the names of `XYZArgs`; `names` gives the choice axes their choices."""
    built: dict[str, Any] = {}
    fills: dict[str, Any] = {}  # not script values, so kept out of `built`
    for key, default in DEFAULT_TYPES.items():
        letter = key.upper()
        with gr.Row():
            # elem ids repeat in txt2img and img2img: select them inside #<tab>_script_x_y_z_plot
            kind = gr.Dropdown(
                list(AXIS_LABELS), value=default, label=f"{letter} type", scale=1, elem_id=f"xyz_{key}_type"
            )
            text = gr.Textbox(
                label=f"{letter} values",
                placeholder="e.g. 1-5, 1-10 (+2), 1-10 [5], or a, b, c",
                visible=default != "Nothing",
                scale=3,
                elem_id=f"xyz_{key}_values",
            )
            # Custom values allowed: the run checks every name and says which one is unknown.
            picks = gr.Dropdown(
                [],
                value=[],
                multiselect=True,
                allow_custom_value=True,
                label=f"{letter} values",
                visible=False,
                scale=3,
                elem_id=f"xyz_{key}_values_dropdown",
            )
            fills[key] = gr.Button("📒", visible=False, min_width=40, scale=0, elem_id=f"xyz_{key}_fill")
        controls = functools.partial(axis_controls, names=names)
        kind.change(controls, [kind, picks], [text, picks, fills[key]], queue=False, api_visibility="private")
        fills[key].click(
            functools.partial(fill_all, names=names), kind, picks, queue=False, api_visibility="private"
        )
        built.update({f"{key}_type": kind, f"{key}_values": text, f"{key}_values_dropdown": picks})
    with gr.Row():
        for a, b in (("x", "y"), ("y", "z"), ("x", "z")):
            inputs = [built[f"{k}_{part}"] for k in (a, b) for part in ("type", "values", "values_dropdown")]
            outputs = [*inputs[:3], fills[a], *inputs[3:], fills[b]]
            gr.Button(f"Swap {a.upper()}/{b.upper()} axes", size="sm").click(
                functools.partial(swap, names=names), inputs, outputs, queue=False, api_visibility="private"
            )
    with gr.Row():
        built["draw_legend"] = gr.Checkbox(True, label="Draw legend")
        built["no_fixed_seeds"] = gr.Checkbox(False, label="Keep -1 for seeds")
        built["vary_seeds_x"] = gr.Checkbox(False, label="Vary seeds for X")
        built["vary_seeds_y"] = gr.Checkbox(False, label="Vary seeds for Y")
        built["vary_seeds_z"] = gr.Checkbox(False, label="Vary seeds for Z")
    with gr.Row():
        built["include_lone_images"] = gr.Checkbox(False, label="Include Sub Images")
        built["include_sub_grids"] = gr.Checkbox(False, label="Include Sub Grids")
        margin = field_limits("margin_size", XYZArgs)
        built["margin_size"] = gr.Slider(
            margin["minimum"], margin["maximum"], value=margin["default"], step=margin["step"],
            label="Grid margins (px)",
        )  # fmt: skip
    return built
