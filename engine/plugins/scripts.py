"""What a script (A1111's "Script" dropdown: X/Y/Z plot, Prompt matrix, ...) is handed when it
takes over a job. A script calls `ctx.process(params)` once per picture it needs — each call is a
normal generation with the job's pictures (img2img), ControlNet units and extension values, saved
as usual — and returns one GenerationResult (typically a grid first, then the pictures)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from engine.pipeline.results import GenerationResult
from engine.service.jobs import Job


@dataclass(frozen=True)
class EngineNames:
    """The names a script may offer or check (the X/Y/Z plot's dropdown axes)."""

    samplers: tuple[str, ...]
    schedulers: tuple[str, ...]
    checkpoints: tuple[str, ...]
    vaes: tuple[str, ...]  # "Automatic", "None", then the files of models/VAE
    hires_upscalers: tuple[str, ...]


@dataclass
class ScriptContext:
    kind: str  # "txt2img" or "img2img"
    params: Any  # GenerationParams / Img2ImgParams as submitted (seed may still be -1)
    args: dict[str, Any]  # the script's own values, by the names its ui() returned
    job: Job
    # One generation: process(params, vae=None) -> GenerationResult. `vae` picks a VAE for this
    # call only ("Automatic", "None" or a file name); ValueError for bad parameters.
    process: Callable[..., GenerationResult]
    names: EngineNames
    # Saves a grid (with its infotext) into the grids folder; returns its path (None: not saved).
    save_grid: Callable[[Image.Image, str], Path | None]
    notes: list[str] = field(default_factory=list)


def run_script(script: Any, ctx: ScriptContext) -> GenerationResult:
    """Run `script.run(ctx)`; its notes are added to the result's."""
    result = script.run(ctx)
    if not isinstance(result, GenerationResult):
        raise TypeError(f"script {script.title!r} returned {type(result).__name__}, not a GenerationResult")
    result.notes.extend(n for n in ctx.notes if n not in result.notes)
    return result
