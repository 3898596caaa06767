"""What extensions add to the generation tabs: their accordions, and their scripts in the tab's
"Script" dropdown. Each contribution lays out its own components (`build()` / `ui()` return them
by name); this module collects them as extra inputs of the Generate event and turns their values
back into the job's `extension_args` and `ScriptCall` (engine.plugins.script_jobs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from engine.plugins.script_jobs import ScriptCall
from ui.common import EngineLike, message_html

log = logging.getLogger(__name__)
NO_SCRIPT = "None"


@dataclass
class ExtensionInputs:
    """The tab's extension components, flat, and how to read their values back."""

    components: list[Any] = field(default_factory=list)
    # (extension name, field names) per accordion, in component order
    accordions: list[tuple[str, list[str]]] = field(default_factory=list)
    # (script title, field names) per script, after the accordions
    scripts: list[tuple[str, list[str]]] = field(default_factory=list)

    def decode(
        self, values: Sequence[Any], script_choice: str | None
    ) -> tuple[dict[str, dict[str, Any]], ScriptCall | None]:
        """(extension_args, the chosen script's call or None)."""
        values = list(values)
        args: dict[str, dict[str, Any]] = {}
        for extension, names in self.accordions:
            taken, values = values[: len(names)], values[len(names) :]
            args.setdefault(extension, {}).update(zip(names, taken, strict=True))
        call = None
        for title, names in self.scripts:
            taken, values = values[: len(names)], values[len(names) :]
            if title == script_choice:
                call = ScriptCall(title, dict(zip(names, taken, strict=True)))
        return args, call


def build_accordions(engine: EngineLike, kind: str, tab: str, inputs: ExtensionInputs) -> None:
    """One closed accordion per extension panel for `kind` ("txt2img" or "img2img") in the tab
    `tab` (elem ids). A panel whose build() raises is replaced by its error: one broken extension
    must not break the page."""
    for accordion in engine.extensions.accordions_for(kind):
        with gr.Accordion(accordion.title, open=False, elem_id=f"{tab}_ext_{_slug(accordion.extension)}"):
            try:
                built = dict(accordion.build())
            except Exception as exc:
                log.exception("extension %s: its panel failed", accordion.extension)
                gr.HTML(message_html(f"Extension {accordion.extension}: panel failed: {exc}"))
                continue
        inputs.accordions.append((accordion.extension, list(built)))
        inputs.components.extend(built.values())


def build_script_groups(
    engine: EngineLike, kind: str, tab: str, dropdown: gr.Dropdown, inputs: ExtensionInputs
) -> None:
    """A hidden group per extension script of `kind`, shown while the dropdown selects it."""
    groups: dict[str, Any] = {}
    for script in engine.extensions.scripts_for(kind):
        with gr.Group(visible=False, elem_id=f"{tab}_script_{_slug(script.title)}") as group:
            try:
                built = dict(script.ui()) if script.ui else {}
            except Exception as exc:
                log.exception("script %s: its controls failed", script.title)
                gr.HTML(message_html(f"Script {script.title}: controls failed: {exc}"))
                continue
        groups[script.title] = group
        inputs.scripts.append((script.title, list(built)))
        inputs.components.extend(built.values())
    if groups:
        titles = list(groups)
        dropdown.change(
            lambda choice: tuple(gr.update(visible=choice == t) for t in titles),
            inputs=dropdown,
            outputs=[groups[t] for t in titles],
            queue=False,
            api_visibility="private",
        )


def script_titles(engine: EngineLike, kind: str) -> list[str]:
    return [s.title for s in engine.extensions.scripts_for(kind)]


def build_txt2img_extensions(engine: EngineLike, tab: str) -> tuple[gr.Dropdown, ExtensionInputs]:
    """txt2img's accordions and its Script dropdown with the scripts' controls."""
    inputs = ExtensionInputs()
    build_accordions(engine, "txt2img", tab, inputs)
    dropdown = gr.Dropdown(
        [NO_SCRIPT, *script_titles(engine, "txt2img")],
        value=NO_SCRIPT,
        label="Script",
        elem_id=f"{tab}_script",
    )
    build_script_groups(engine, "txt2img", tab, dropdown, inputs)
    return dropdown, inputs


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
