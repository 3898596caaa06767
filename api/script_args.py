"""Turning an API request's `script_args` / `alwayson_scripts` args into a script's or panel's
values by name.

A1111 clients send args as a list in the order the script's UI lays them out; ours may also send
an object of name: value. The names (and the values of args a client leaves out) come from the
components the contribution's own `ui()` / `build()` returns, laid out once in a throwaway Blocks
and remembered — so the API never drifts from the UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_cache: dict[Callable, list[tuple[str, Any]]] = {}
_lock = threading.Lock()


def fields_of(build: Callable[[], dict[str, Any]]) -> list[tuple[str, Any]]:
    """(name, default value) of each component `build()` lays out, in its order."""
    with _lock:
        if build not in _cache:
            import gradio as gr

            with gr.Blocks():
                built = dict(build())
            _cache[build] = [(name, getattr(component, "value", None)) for name, component in built.items()]
        return _cache[build]


def named_args(build: Callable[[], dict[str, Any]], values: Any) -> dict[str, Any]:
    """The full set of values by name: `values` (a list in UI order, or an object) over the
    defaults. ValueError for too many list items or an unknown name."""
    fields = fields_of(build)
    result = {name: default for name, default in fields}
    if values is None:
        return result
    if isinstance(values, list):
        if len(values) > len(fields):
            raise ValueError(
                f"{len(values)} args given, this takes at most {len(fields)}: {', '.join(result)}"
            )
        result.update(zip((name for name, _ in fields), values, strict=False))
        return result
    if isinstance(values, dict):
        unknown = [key for key in values if key not in result]
        if unknown:
            raise ValueError(f"unknown arg {unknown[0]!r}; known: {', '.join(result)}")
        result.update(values)
        return result
    raise ValueError("args must be a list (in the UI's order) or an object of name: value")
