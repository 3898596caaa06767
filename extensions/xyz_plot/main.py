"""The X/Y/Z plot script (A1111's "X/Y/Z plot"): pictures with parameters varied along up to three
axes, laid out as a grid with a legend. Parsing in values.py, axis types in axes.py, checking in
plan.py, generation and grids in plot.py, controls in ui.py, arguments in args.py."""

from __future__ import annotations

from .args import XYZArgs
from .plot import TITLE, run
from .ui import build_ui

__all__ = ["XYZArgs", "setup"]


def setup(ext) -> None:
    # The engine's names reach the dropdowns through the callbacks, read when one needs them.
    ext.script(TITLE, run, ui=lambda: build_ui(ext.engine_names), tabs=("txt2img", "img2img"), args=XYZArgs)
