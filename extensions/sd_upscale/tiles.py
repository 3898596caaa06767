"""The SD upscale script (A1111's): enlarge the picture with an upscaler, then redraw it tile by
tile with img2img at the job's width × height, the tiles overlapping by `overlap` px and blended
with linear ramps across the overlap, so no seam shows. Every tile uses the picture's seed, as in
A1111, which keeps neighbouring tiles alike. Each tile is an ordinary img2img run through
`ctx.process` (so every extension hook fires for it); the stitched picture goes out through
`ctx.emit` like any pipeline's picture."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from engine.pipeline.img2img import Img2ImgInputs
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seeds
from engine.upscale.tiling import edge_ramp, tile_starts

TITLE = "SD upscale"
MIN_TILE = 64


def tile_boxes(
    width: int, height: int, tile_w: int, tile_h: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) of every tile covering a width × height picture, row by row."""
    xs, ys = tile_starts(width, tile_w, overlap), tile_starts(height, tile_h, overlap)
    return [(x, y, x + tile_w, y + tile_h) for y in ys for x in xs]


def upscaler_name(value: int | str, names: tuple[str, ...]) -> str:
    """A1111 clients send the upscaler's index in its list ("None", Lanczos, Nearest, then the
    model files); the UI sends its name."""
    if isinstance(value, int):
        if not 0 <= value < len(names):
            raise ValueError(f"SD upscale: upscaler index {value} is out of range (0-{len(names) - 1})")
        return names[value]
    if value not in names:
        raise ValueError(f"SD upscale: unknown upscaler {value!r} (known: {', '.join(names)})")
    return value


def run(ctx: Any) -> GenerationResult:
    """One upscaled picture per seed of the job (batch count × batch size)."""
    if ctx.inputs is None or not ctx.inputs.init_images:
        raise ValueError("SD upscale: give the picture to upscale")
    upscaler = upscaler_name(ctx.args["upscaler_index"], ctx.names.upscalers)
    params = resolve_seeds(ctx.params).without_mask_options()
    big = ctx.upscale(ctx.inputs.init_images[0].convert("RGB"), ctx.args["scale_factor"], upscaler)
    tile_w, tile_h = min(params.width, big.width // 8 * 8), min(params.height, big.height // 8 * 8)
    if tile_w < MIN_TILE or tile_h < MIN_TILE:
        raise ValueError(f"SD upscale: the upscaled picture is smaller than one {MIN_TILE} px tile")
    overlap = max(0, min(int(ctx.args["overlap"]), min(tile_w, tile_h) // 2))
    boxes = tile_boxes(big.width, big.height, tile_w, tile_h, overlap)
    result = GenerationResult(params=params)
    # What the infotext and the result record: the job as run, at the upscaled size.
    whole = {
        "width": big.width,
        "height": big.height,
        "n_iter": params.n_iter,
        "batch_size": params.batch_size,
    }
    for index in range(params.n_iter * params.batch_size):
        seed = params.seed + index
        tile_params = params.model_copy(
            update={"width": tile_w, "height": tile_h, "seed": seed, "n_iter": 1, "batch_size": 1}
        )
        canvas = np.zeros((big.height, big.width, 3))
        weights = np.zeros((big.height, big.width, 1))
        used = tile_params
        for x1, y1, x2, y2 in boxes:
            ctx.job.check()
            out = ctx.process(tile_params, inputs=Img2ImgInputs([big.crop((x1, y1, x2, y2))]), save=False)
            used = out.params
            result.notes.extend(n for n in out.notes if n not in result.notes)
            wy = edge_ramp(tile_h, overlap, y1 == boxes[0][1], y2 == big.height).numpy()
            wx = edge_ramp(tile_w, overlap, x1 == boxes[0][0], x2 == big.width).numpy()
            weight = (wy[:, None] * wx[None, :])[..., None]
            canvas[y1:y2, x1:x2] += np.asarray(out.images[0], dtype=np.float64) * weight
            weights[y1:y2, x1:x2] += weight
        picture = Image.fromarray((canvas / weights).round().clip(0, 255).astype(np.uint8))
        recorded = used.model_copy(update=whole)
        extra = {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler}
        ctx.emit(result, picture, ctx.infotext(recorded, seed, extra), seed)
        if ctx.job.interrupted:
            break
    if result.images:
        result.params = used.model_copy(update={**whole, "seed": params.seed})
    return result
