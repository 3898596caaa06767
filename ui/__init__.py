"""Atelier's browser UI (Gradio Blocks). Holds no generation logic: it calls `engine.service.facade.Engine`.

`from ui.app import build_ui, serve` — importing this package alone does not import Gradio.
"""
