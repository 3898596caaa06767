"""The X/Y/Z plot script (A1111's "X/Y/Z plot"): pictures with parameters varied along up to three
axes, laid out as a grid with a legend. Parsing in values.py, axis types in axes.py, checking in
plan.py, generation and grids in plot.py, controls in ui.py."""

from __future__ import annotations

from .plot import TITLE, run
from .ui import build_ui, set_names_provider

__all__ = ["set_names_provider", "setup"]


def setup(ext) -> None:
    set_names_provider(ext.engine_names)  # the engine's names, read when a dropdown needs them
    ext.script(TITLE, run, ui=build_ui, tabs=("txt2img", "img2img"))
