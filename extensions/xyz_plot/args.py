"""The X/Y/Z plot's arguments, declared once: the UI's controls and the API's `script_args` follow
them (engine.plugins.args)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.plugins.args import ExtensionArgs

DEFAULT_TYPES = {"x": "Seed", "y": "Nothing", "z": "Nothing"}  # A1111's start-up choice
AxisType = int | str | None  # a label (any case), or A1111's index in the axis list
# "1-5, 7", or one number; None from a values box the UI hides (an axis set to Nothing)
Values = str | int | float | None


class XYZArgs(ExtensionArgs):
    """In A1111's order, so positional `script_args` from A1111 clients line up."""

    x_type: AxisType = DEFAULT_TYPES["x"]
    x_values: Values = ""
    x_values_dropdown: list[Any] | None = Field(default_factory=list)
    y_type: AxisType = DEFAULT_TYPES["y"]
    y_values: Values = ""
    y_values_dropdown: list[Any] | None = Field(default_factory=list)
    z_type: AxisType = DEFAULT_TYPES["z"]
    z_values: Values = ""
    z_values_dropdown: list[Any] | None = Field(default_factory=list)
    draw_legend: bool = True
    include_lone_images: bool = False
    include_sub_grids: bool = False
    no_fixed_seeds: bool = False  # "Keep -1 for seeds"
    vary_seeds_x: bool = False
    vary_seeds_y: bool = False
    vary_seeds_z: bool = False
    margin_size: int = Field(0, ge=0, le=500, json_schema_extra={"step": 2})
    # A1111's "Use text inputs instead of dropdowns": our values box always takes text, so the
    # slot is kept only for positional args and changes nothing.
    csv_mode: bool = False
