"""The Settings tab: one control per `engine.schema.settings.Settings` field, generated from the model.

Adding a setting is one field (with a description) on the model; this tab picks it up. The engine
validates and saves (`engine.update_settings`); the tab only reports success or the error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

import gradio as gr

from engine.schema.infotext import override_entries
from engine.schema.params import GenerationParams
from engine.schema.sampler_params import SAMPLER_NAMES as SAMPLER_PARAMS
from engine.schema.settings import Settings
from ui.common import EngineLike, error_message, message_html

# Fields whose value must be one of the engine's names: shown as dropdowns.
CHOICE_FIELDS = {"default_sampler": "sampler_names", "default_scheduler": "schedule_names"}


def setting_names() -> list[str]:
    """The Settings tab's fields: all but the sampler parameters (they have their own tab)."""
    return [name for name in Settings.model_fields if name not in SAMPLER_PARAMS]


def _coerce(name: str, value: Any) -> Any:
    """Gradio numbers arrive as floats; int settings want ints (a fractional one is left for the
    model to reject with its own message)."""
    if Settings.model_fields[name].annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def apply_settings(engine: EngineLike, names: Sequence[str], values: Sequence[Any]) -> str:
    """Save the changed values; returns an HTML notice saying what happened."""
    current = engine.settings
    changes = {
        name: _coerce(name, value)
        for name, value in zip(names, values, strict=True)
        if _coerce(name, value) != getattr(current, name)
    }
    if not changes:
        return message_html("Nothing changed.", "info")
    try:
        engine.update_settings(**changes)
    except Exception as exc:  # a validation error is the user's to fix: show it, keep running
        return message_html(f"Settings not saved: {error_message(exc)}")
    return message_html(f"Saved {len(changes)} setting(s): {', '.join(changes)}.", "info")


def _control(engine: EngineLike, name: str, value: Any) -> gr.components.Component:
    info = Settings.model_fields[name]
    label = info.description or name
    common: dict[str, Any] = {"label": label, "info": name, "elem_id": f"setting_{name}"}
    if name in CHOICE_FIELDS:
        choices = getattr(engine, CHOICE_FIELDS[name])()
        return gr.Dropdown(choices, value=value, allow_custom_value=True, **common)
    if get_origin(info.annotation) is Literal:
        return gr.Dropdown(list(get_args(info.annotation)), value=value, **common)
    if info.annotation is bool:
        # Checkboxes show the label beside the box; the key goes in `info` under it.
        return gr.Checkbox(value=value, **common)
    if info.annotation is int:
        return gr.Number(value=value, precision=0, **common)
    if info.annotation is float:
        return gr.Number(value=value, **common)
    return gr.Textbox(value="" if value is None else str(value), **common)


def build_settings_tab(engine: EngineLike) -> tuple[list[gr.components.Component], list[str]]:
    """Lay out the Settings tab; returns (controls, names) so app.py can refresh them on page load.
    Above the fields: the memory plan the latest job ran with (chosen per job, so a button reads it
    again)."""
    with gr.Row():
        plan = gr.Markdown(memory_plan_markdown(engine), elem_id="settings_memory_plan")
        refresh = gr.Button("Refresh", size="sm", scale=0, elem_id="settings_memory_plan_refresh")
    refresh.click(lambda: memory_plan_markdown(engine), outputs=plan, api_visibility="private")
    return _build_panel(engine, setting_names(), "settings")


def memory_plan_markdown(engine: EngineLike) -> str:
    return f"**Memory plan in use:** {engine.memory_plan_text()}"


def build_sampler_settings_tab(
    engine: EngineLike, checkpoint: gr.Dropdown | None = None
) -> tuple[list[gr.components.Component], list[str], gr.HTML]:
    """The Sampler settings tab: A1111's sampler parameters (eta, sigma churn, UniPC, ...). They are
    the defaults of every job; a job (or an infotext, or an API request) may override each one.
    Returns (controls, names, the checkpoint-preferences line); the line follows `checkpoint`."""
    gr.Markdown(
        "Defaults for every generation. Values that differ from A1111's defaults are written into "
        "the image's parameters, and *Send to txt2img* / the API can override them per job."
    )
    preferred = gr.HTML(current_preferences_html(engine), elem_id="sampler_settings_preferred")
    if checkpoint is not None:
        checkpoint.change(
            lambda title: preferences_html(engine, title),
            inputs=checkpoint,
            outputs=preferred,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
    controls, names = _build_panel(engine, list(SAMPLER_PARAMS), "sampler_settings")
    return controls, names, preferred


def current_preferences_html(engine: EngineLike) -> str:
    """`preferences_html` for the checkpoint in use ("" when there is none to ask about)."""
    try:
        title = engine.current_checkpoint()
    except ValueError:  # no checkpoints at all: the quick-settings bar says so
        return ""
    return preferences_html(engine, title) if title else ""


def preferences_html(engine: EngineLike, title: str | None) -> str:
    """What the checkpoint `title` prefers for these settings, and whether it is used: the line above
    the Sampler settings fields (empty when the checkpoint states no preference)."""
    try:
        preferred = engine.preferred_sampler_settings(title)
    except Exception as exc:  # a broken <checkpoint>.json: say so; jobs run with the settings alone
        return message_html(f"{title}: preferred sampler settings ignored: {error_message(exc)}")
    if not preferred:
        return ""
    listed = ", ".join(
        override_entries(GenerationParams(prompt="", **preferred))
    )  # as the infotext spells them
    if not engine.settings.use_checkpoint_preferences:
        return message_html(
            f"{title} prefers {listed}. Not used: “Use a checkpoint's preferred sampler settings” is "
            "off in Settings.",
            "info",
        )
    return message_html(
        f"{title} prefers {listed}: used for each of these left at A1111's default below (a value "
        "you set, or a job's own, wins). Switch off in Settings.",
        "info",
    )


def _build_panel(
    engine: EngineLike, names: list[str], prefix: str
) -> tuple[list[gr.components.Component], list[str]]:
    settings = engine.settings
    with gr.Row():
        apply = gr.Button("Apply settings", variant="primary", elem_id=f"{prefix}_apply", scale=0)
        result = gr.HTML("", elem_id=f"{prefix}_result")
    with gr.Column(elem_id=f"{prefix}_fields"):
        controls = [_control(engine, name, getattr(settings, name)) for name in names]

    def on_apply(*values: Any) -> str:
        return apply_settings(engine, names, values)

    apply.click(on_apply, inputs=controls, outputs=result, api_visibility="private")
    return controls, names
