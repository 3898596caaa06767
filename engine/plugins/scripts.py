"""What a script (A1111's "Script" dropdown: X/Y/Z plot, Prompt matrix, SD upscale, ...) is handed
when it takes over a job. A script calls `ctx.process(params)` once per picture it needs — each
call is a normal generation through the engine's one submit path, with the job's pictures (img2img),
ControlNet units and extension values, every hook firing and the pictures saved as usual — and
returns one GenerationResult (typically a grid first, then the pictures). A script that makes a
picture of its own (SD upscale's stitched tiles) hands it to `ctx.emit`, which treats it as every
pipeline treats its pictures."""

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
    upscalers: tuple[str, ...] = ()  # picture upscalers, A1111's order: "None", Lanczos, Nearest, files


@dataclass
class ScriptContext:
    kind: str  # "txt2img" or "img2img"
    params: Any  # GenerationParams / Img2ImgParams as submitted (seed may still be -1)
    args: dict[str, Any]  # the script's own values, by the names its ui() returned
    job: Job
    # One generation: process(params, *, vae=None, inputs=None, save=True) -> GenerationResult.
    # `vae` picks a VAE for this call only ("Automatic", "None" or a file name); `inputs` (an
    # Img2ImgInputs) replaces the job's pictures for this call (SD upscale's tiles, outpainting's
    # wider canvas); `save=False` keeps its pictures out of the output folder (tiles). ValueError
    # for bad parameters.
    process: Callable[..., GenerationResult]
    names: EngineNames
    # Saves a grid (with its infotext) into the grids folder; returns its path (None: not saved).
    save_grid: Callable[[Image.Image, str], Path | None]
    notes: list[str] = field(default_factory=list)
    inputs: Any = None  # the job's pictures (Img2ImgInputs) in img2img; None in txt2img
    # emit(result, picture, infotext, seed): a picture the script made itself joins `result` as a
    # pipeline's pictures do: the extensions' per-picture stages run, then it is saved (when the
    # job saves) with its infotext.
    emit: Callable[[GenerationResult, Image.Image, str, int], None] | None = None
    # infotext(params, seed, extra=None) -> the A1111 parameters text of a picture made with
    # `params` (e.g. a `process` result's params) on the job's checkpoint.
    infotext: Callable[..., str] | None = None
    # upscale(picture, scale, upscaler) -> the picture enlarged by a name of `names.upscalers`.
    upscale: Callable[[Image.Image, float, str], Image.Image] | None = None


def run_script(script: Any, ctx: ScriptContext) -> GenerationResult:
    """Run `script.run(ctx)`; its notes are added to the result's."""
    result = script.run(ctx)
    if not isinstance(result, GenerationResult):
        raise TypeError(f"script {script.title!r} returned {type(result).__name__}, not a GenerationResult")
    result.notes.extend(n for n in ctx.notes if n not in result.notes)
    return result
