"""The size picker beside Width/Height, and the size a newly chosen checkpoint proposes.

Each family has its common sizes (SDXL's training buckets, 1024×1024 to 1536×640; the same shapes
scaled for SD 1.x); choosing one sets both sliders. Choosing another checkpoint proposes its own
size (1024² for SDXL, 512² for SD 1.x, 128² for the built-in model) in every generation tab whose
size is still the previous proposal; a size the user chose is kept, and a message says so.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ui.common import EngineLike


def size_label(width: int, height: int) -> str:
    return f"{width}×{height}"


def parse_size(label: str | None) -> tuple[int, int] | None:
    try:
        width, height = str(label).split("×")
        return int(width), int(height)
    except ValueError:
        return None


def build_size_picker(engine: EngineLike, tab: str, width: Any, height: Any) -> gr.Dropdown:
    """A dropdown of the current family's sizes; picking one sets `width` and `height`."""
    _, sizes = engine.size_choices()
    picker = gr.Dropdown(
        [size_label(w, h) for w, h in sizes],
        value=None,
        label="Size presets",
        elem_id=f"{tab}_size_presets",
    )

    def pick(label: str | None) -> tuple[Any, Any]:
        size = parse_size(label)
        return (size[0], size[1]) if size else (gr.skip(), gr.skip())

    picker.input(pick, inputs=picker, outputs=[width, height], queue=False, api_visibility="private")
    for slider in (width, height):  # a size typed by hand is no longer the picked one
        slider.input(
            lambda: None, outputs=picker, queue=False, show_progress="hidden", api_visibility="private"
        )
    return picker


def proposed_updates(
    engine: EngineLike, last: int, sizes: list[tuple[Any, Any]]
) -> tuple[int, list[Any], list[Any], list[str]]:
    """(the new proposal, picker updates, (width, height) updates per tab, messages). A tab whose
    size is still the last proposal takes the new one; any other size is the user's and stays."""
    native, choices = engine.size_choices()
    labels = [size_label(w, h) for w, h in choices]
    pickers = [gr.update(choices=labels, value=None) for _ in sizes]
    updates: list[Any] = []
    kept: set[tuple[int, int]] = set()
    for width, height in sizes:
        if native == last or (width, height) != (last, last):
            updates += [gr.skip(), gr.skip()]
            if native != last and width is not None:
                kept.add((int(width), int(height)))
        else:
            updates += [native, native]
    messages = [
        f"Kept your size {size_label(w, h)}; this checkpoint proposes {size_label(native, native)}"
        for w, h in sorted(kept)
    ]
    return native, pickers, updates, messages


def wire_size_proposals(engine: EngineLike, event: Any, tabs: list[tuple[Any, Any, Any]]) -> None:
    """After `event` (a checkpoint change), propose the new checkpoint's size in each tab of
    `tabs` ((picker, width, height) each)."""
    last = gr.State(engine.default_size())
    sliders = [component for _, width, height in tabs for component in (width, height)]

    def propose(last_size: int, *values: Any) -> list[Any]:
        try:
            pairs = list(zip(values[::2], values[1::2], strict=True))
            native, pickers, updates, messages = proposed_updates(engine, last_size, pairs)
        except Exception:  # no checkpoint could be read: leave everything as it is
            return [gr.skip()] * (1 + len(tabs) + len(sliders))
        for message in messages:
            gr.Info(message)
        return [native, *pickers, *updates]

    event.then(
        propose,
        inputs=[last, *sliders],
        outputs=[last, *(picker for picker, _, _ in tabs), *sliders],
        queue=False,
        api_visibility="private",
    )


PROPOSED_FIELDS = ("cfg_scale", "steps")  # besides the size, what a checkpoint proposes


def proposed_values(
    engine: EngineLike, last: dict[str, float], values: list[tuple[Any, ...]]
) -> tuple[dict[str, float], list[Any]]:
    """(the new proposal, updates of each tab's PROPOSED_FIELDS). As for the size, a value still
    equal to the last proposal takes the new one; one the user changed stays."""
    proposal = engine.generation_proposal()
    updates: list[Any] = []
    for tab_values in values:
        for name, value in zip(PROPOSED_FIELDS, tab_values, strict=True):
            same = value is not None and name in last and float(value) == float(last[name])
            updates.append(proposal[name] if same and proposal[name] != last[name] else gr.skip())
    return proposal, updates


def wire_value_proposals(engine: EngineLike, event: Any, tabs: list[tuple[Any, ...]]) -> None:
    """After `event` (a checkpoint change), propose the new checkpoint's CFG scale and steps in
    each tab of `tabs` ((cfg_scale, steps) sliders each): Flux's CFG 1, schnell's 4 steps, and
    the Settings' defaults again on the way back."""
    last = gr.State(engine.generation_proposal())
    sliders = [slider for tab in tabs for slider in tab]

    def propose(last_values: dict[str, float], *values: Any) -> list[Any]:
        try:
            grouped = [
                values[i : i + len(PROPOSED_FIELDS)] for i in range(0, len(values), len(PROPOSED_FIELDS))
            ]
            proposal, updates = proposed_values(engine, last_values, grouped)
        except Exception:  # no checkpoint could be read: leave everything as it is
            return [gr.skip()] * (1 + len(sliders))
        return [proposal, *updates]

    event.then(
        propose, inputs=[last, *sliders], outputs=[last, *sliders], queue=False, api_visibility="private"
    )
