"""The quick-settings bar above the tabs: the checkpoint dropdown and its 🔄 refresh button."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from ui.common import EngineLike, error_message


def waiting_message(title: str, ahead: int) -> str:
    """What the user reads while a chosen checkpoint waits for the jobs queued before it."""
    after = "the running job" if ahead == 1 else f"{ahead} jobs"
    return f"Loading {title} after {after}…"


def change_checkpoint(
    engine: EngineLike, title: str | None, notify: Callable[[str], None] = lambda _message: None
) -> tuple[str | None, str | None]:
    """Load `title`; returns (the checkpoint now loaded, error message or None). The load is a job
    of its own, so it waits for the jobs ahead of it (a model loaded beside a running job would
    double the memory); `notify` is told so when it has to wait."""
    if not title:
        return engine.current_checkpoint(), None
    try:
        job = engine.submit_load(title)
    except Exception as exc:  # an unknown title: report and keep the current model
        return engine.current_checkpoint(), _load_failed(title, exc)
    if job.queued_behind:
        notify(waiting_message(title, job.queued_behind))
    job.wait()
    if job.error is not None:  # a broken file must not take the server down: report and carry on
        return engine.current_checkpoint(), _load_failed(title, job.error)
    return engine.current_checkpoint(), None


def _load_failed(title: str, error: BaseException) -> str:
    return f"Could not load {title}: {error_message(error)}"


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
        # gr.Info reaches the page at once, while this event still waits for the load.
        loaded, message = change_checkpoint(engine, title, notify=gr.Info)
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
