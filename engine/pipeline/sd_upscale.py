"""The "SD upscale" img2img script (A1111): enlarge the picture with an upscaler, then redraw it
tile by tile with img2img at the job's width × height, the tiles overlapping by `overlap` px and
blended with linear ramps across the overlap, so no seam shows. Every tile uses the job's seed, as
in A1111, which keeps neighbouring tiles alike."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.models.types import LoadedModel
from engine.pipeline import stages
from engine.pipeline.img2img import Img2ImgInputs, img2img
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seeds
from engine.schema.infotext import build_infotext
from engine.schema.params import Img2ImgParams
from engine.service.jobs import Job
from engine.upscale.tiling import _ramp, _starts
from engine.upscale.upscalers import UpscalerLibrary


def tile_boxes(
    width: int, height: int, tile_w: int, tile_h: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    xs, ys = _starts(width, tile_w, overlap), _starts(height, tile_h, overlap)
    return [(x, y, x + tile_w, y + tile_h) for y in ys for x in xs]


def sd_upscale(
    model: LoadedModel,
    params: Img2ImgParams,
    picture: Image.Image,
    *,
    scale: float,
    upscaler: str,
    overlap: int,
    upscalers: UpscalerLibrary,
    job: Job | None = None,
    save: stages.SaveOptions | None = None,
    **pipeline,
) -> GenerationResult:
    """One upscaled picture per seed of the job (batch count × batch size)."""
    job = job or Job("img2img")
    params = resolve_seeds(params).without_mask_options()
    big = upscalers.upscale(picture.convert("RGB"), scale, upscaler)
    tile_w, tile_h = min(params.width, big.width // 8 * 8), min(params.height, big.height // 8 * 8)
    if tile_w < 64 or tile_h < 64:
        raise ValueError("SD upscale: the upscaled picture is smaller than one 64 px tile")
    overlap = max(0, min(overlap, min(tile_w, tile_h) // 2))
    boxes = tile_boxes(big.width, big.height, tile_w, tile_h, overlap)
    result = GenerationResult(params=params)
    for index in range(params.n_iter * params.batch_size):
        seed = params.seed + index
        tile_params = params.model_copy(
            update={"width": tile_w, "height": tile_h, "seed": seed, "n_iter": 1, "batch_size": 1}
        )
        canvas = np.zeros((big.height, big.width, 3))
        weights = np.zeros((big.height, big.width, 1))
        for x1, y1, x2, y2 in boxes:
            job.check()
            out = img2img(
                model, tile_params, Img2ImgInputs([big.crop((x1, y1, x2, y2))]), job=job, **pipeline
            )
            result.notes.extend(n for n in out.notes if n not in result.notes)
            wy = _ramp(tile_h, overlap, y1 == boxes[0][1], y2 == big.height).numpy()
            wx = _ramp(tile_w, overlap, x1 == boxes[0][0], x2 == big.width).numpy()
            weight = (wy[:, None] * wx[None, :])[..., None]
            canvas[y1:y2, x1:x2] += np.asarray(out.images[0], dtype=np.float64) * weight
            weights[y1:y2, x1:x2] += weight
        image = Image.fromarray((canvas / weights).round().clip(0, 255).astype(np.uint8))
        infotext = build_infotext(
            params.model_copy(update={"width": big.width, "height": big.height}),
            seed=seed,
            model_name=model.info.name,
            model_hash=model.short_hash,
            extra={"SD upscale overlap": overlap, "SD upscale upscaler": upscaler},
        )
        stages.emit_image(result, image, infotext, seed, save)
    return result
