"""ControlNet unit handlers: the units panel's values → ControlInput list, preprocessor choices
and their thresholds, and the preview of a unit's map. Plain functions, tested without a browser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.controlnet.preprocessors import PREPROCESSORS
from engine.controlnet.units import ControlInput, ControlNetUnit
from ui.handlers.inputs import as_number

# The values of one unit, in the order the panel passes them.
UNIT_FIELDS = (
    "enabled",
    "image",
    "module",
    "model",
    "weight",
    "guidance_start",
    "guidance_end",
    "control_mode",
    "resize_mode",
    "pixel_perfect",
    "processor_res",
    "threshold_a",
    "threshold_b",
    "hr_option",
)


def unit_from_values(values: dict[str, Any]) -> ControlNetUnit:
    spec = PREPROCESSORS.get(values.get("module") or "none")
    return ControlNetUnit(
        enabled=bool(values.get("enabled")),
        module=values.get("module") or "none",
        model=values.get("model") or "None",
        weight=values.get("weight", 1.0),
        guidance_start=values.get("guidance_start", 0.0),
        guidance_end=values.get("guidance_end", 1.0),
        control_mode=values.get("control_mode") or "Balanced",
        resize_mode=values.get("resize_mode") or "Crop and Resize",
        pixel_perfect=bool(values.get("pixel_perfect")),
        processor_res=as_number(values.get("processor_res", 512)),
        # A threshold slider is only meaningful for a preprocessor that has that threshold.
        threshold_a=values.get("threshold_a") if spec is not None and spec.threshold_a else None,
        threshold_b=values.get("threshold_b") if spec is not None and spec.threshold_b else None,
        hr_option=values.get("hr_option") or "Both",
    )


def units_from_values(values: Sequence[Any], open_picture) -> list[ControlInput]:
    """The flat values of N units (UNIT_FIELDS each) → the enabled units with their pictures.
    `open_picture(value, what)` decodes an upload (a clear ValueError for a bad one)."""
    width = len(UNIT_FIELDS)
    if len(values) % width:
        raise ValueError("internal: ControlNet unit values do not line up")
    inputs = []
    for index in range(len(values) // width):
        named = dict(zip(UNIT_FIELDS, values[index * width : (index + 1) * width], strict=True))
        if not named.get("enabled"):
            continue
        unit = unit_from_values(named)
        inputs.append(ControlInput(unit, open_picture(named.get("image"), f"ControlNet unit {index}")))
    return inputs


def preprocessor_choices(entries: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """Dropdown (label, value) pairs: unavailable preprocessors stay listed, marked with why."""
    return [
        (name if reason is None else f"{name} (unavailable: no weights)", name) for name, reason in entries
    ]


def threshold_updates(module: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Slider settings (visible, label, range, value) for the preprocessor's two thresholds."""
    spec = PREPROCESSORS.get(module or "none")
    updates = []
    for threshold in (spec.threshold_a if spec else None, spec.threshold_b if spec else None):
        if threshold is None:
            updates.append({"visible": False})
        else:
            updates.append(
                {
                    "visible": True,
                    "label": threshold.label,
                    "minimum": threshold.minimum,
                    "maximum": threshold.maximum,
                    "step": threshold.step,
                    "value": threshold.default,
                }
            )
    return updates[0], updates[1]
