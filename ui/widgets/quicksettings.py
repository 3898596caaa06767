"""The quick-settings bar above the tabs: the checkpoint dropdown and its 🔄 refresh button."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ui.common import EngineLike, error_message


def change_checkpoint(engine: EngineLike, title: str | None) -> tuple[str | None, str | None]:
    """Load `title`; returns (the checkpoint now loaded, error message or None)."""
    if not title:
        return engine.current_checkpoint(), None
    try:
        engine.load_checkpoint(title)
    except Exception as exc:  # a broken file must not take the server down: report and carry on
        return engine.current_checkpoint(), f"Could not load {title}: {error_message(exc)}"
    return engine.current_checkpoint(), None


def refresh_checkpoints(engine: EngineLike, selected: str | None) -> tuple[list[str], str | None]:
    """Rescan the model folders; keeps the selection if it is still there."""
    titles = engine.refresh_checkpoints()
    return titles, selected if selected in titles else (titles[0] if titles else None)


def current_checkpoint_update(engine: EngineLike) -> dict:
    """The dropdown as it should be when a page opens: another tab may have switched models."""
    try:
        return gr.update(choices=engine.list_checkpoints(), value=engine.current_checkpoint())
    except Exception as exc:  # e.g. no checkpoints at all: the page must still open
        gr.Warning(error_message(exc))
        return gr.skip()


def build_quicksettings(engine: EngineLike) -> tuple[gr.Dropdown, Any]:
    """Lay out the bar; returns the dropdown (app.py refreshes it on every page load) and the
    event of the user's choice, for what follows a checkpoint change (the proposed size)."""
    try:
        titles, current = engine.list_checkpoints(), engine.current_checkpoint()
    except ValueError:  # no checkpoints: an empty dropdown, the page-load event reports why
        titles, current = [], None
    with gr.Row(elem_id="quicksettings", equal_height=True):
        checkpoint = gr.Dropdown(
            titles,
            value=current,
            label="Stable Diffusion checkpoint",
            elem_id="setting_sd_model_checkpoint",
            scale=0,
            min_width=380,
            allow_custom_value=False,
        )
        refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=48)

    def on_change(title: str | None) -> dict:
        loaded, message = change_checkpoint(engine, title)
        if message:
            gr.Warning(message)
        return gr.update(value=loaded)

    def on_refresh(selected: str | None) -> dict:
        try:
            titles, value = refresh_checkpoints(engine, selected)
        except Exception as exc:
            gr.Warning(f"Could not rescan the model folders: {error_message(exc)}")
            return gr.skip()
        return gr.update(choices=titles, value=value)

    # .input fires only for the user's own choice, not when the page-load event sets the value.
    changed = checkpoint.input(on_change, inputs=checkpoint, outputs=checkpoint, api_visibility="private")
    refresh.click(on_refresh, inputs=checkpoint, outputs=checkpoint, api_visibility="private")
    return checkpoint, changed
