"""The styles picker under Generate: choose styles for the next generation, apply them to the
prompt boxes (🖌️), or save the current prompts as a new style (💾). The rules live in
`engine.schema.styles`; these handlers only move values and report problems."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.common import EngineLike, error_message


@dataclass
class StylesUI:
    picker: gr.Dropdown
    apply: gr.Button
    name: gr.Textbox
    save: gr.Button
    applied: Any  # the 🖌️ click event, for chaining


def style_choices(engine: EngineLike) -> tuple[list[str], str | None]:
    """(style names, problem with styles.csv or None)."""
    styles = engine.styles()
    return styles.names, styles.problem


def apply_styles(engine: EngineLike, prompt: str, negative: str, names: list[str] | None) -> tuple[str, str]:
    """The prompt boxes with the selected styles written into them. Raises ValueError."""
    return engine.styles().apply(prompt or "", negative or "", list(names or []))


def save_style(engine: EngineLike, name: str, prompt: str, negative: str) -> list[str]:
    """Save the prompts as style `name`; returns the new list of names. Raises ValueError."""
    return engine.save_style((name or "").strip(), prompt or "", negative or "").names


def build_styles(
    engine: EngineLike, prompt: gr.Textbox, negative: gr.Textbox, tab: str = "txt2img"
) -> StylesUI:
    names, problem = style_choices(engine)
    with gr.Row(elem_id=f"{tab}_styles_row", equal_height=True):
        picker = gr.Dropdown(
            names,
            value=[],
            multiselect=True,
            label="Styles",
            info=problem,
            elem_id=f"{tab}_styles",
            scale=5,
        )
        apply = gr.Button("🖌️", elem_id=f"{tab}_style_apply", min_width=40, scale=1)
    with gr.Accordion("Save prompts as a style", open=False, elem_id=f"{tab}_style_save_box"):
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Style name", elem_id=f"{tab}_style_name", scale=4)
            save = gr.Button("💾", elem_id=f"{tab}_style_save", min_width=40, scale=1)

    def on_apply(p: str, n: str, selected: list[str] | None):
        try:
            p, n = apply_styles(engine, p, n, selected)
        except ValueError as exc:
            gr.Warning(error_message(exc))
            return gr.skip(), gr.skip(), gr.skip()
        return p, n, []

    def on_save(style_name: str, p: str, n: str):
        try:
            names = save_style(engine, style_name, p, n)
        except ValueError as exc:
            gr.Warning(error_message(exc))
            return gr.skip(), gr.skip()
        gr.Info(f"Saved style {style_name.strip()!r}")
        return gr.Dropdown(choices=names, info=None), ""

    def on_focus():
        fresh, trouble = style_choices(engine)  # styles.csv may have been edited by hand
        return gr.Dropdown(choices=fresh, info=trouble)

    applied = apply.click(
        on_apply, inputs=[prompt, negative, picker], outputs=[prompt, negative, picker],
        queue=False, api_visibility="private",
    )  # fmt: skip
    save.click(
        on_save,
        inputs=[name, prompt, negative],
        outputs=[picker, name],
        queue=False,
        api_visibility="private",
    )
    picker.focus(on_focus, outputs=picker, queue=False, api_visibility="private")
    return StylesUI(picker, apply, name, save, applied)
