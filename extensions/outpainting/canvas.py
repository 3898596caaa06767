"""Outpainting: extend the canvas and inpaint the new border (A1111's "Poor man's outpainting").

The picture is pasted onto a larger canvas; the mask covers the new area and reaches `mask_blur`
px into the picture so the seam is repainted and blended; the latents are repainted a further
`mask_blur` px in (A1111's separate latent mask), so the model sees the seam's neighbourhood
change smoothly. Everything else is the ordinary inpainting pipeline.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from engine.pipeline.img2img import Img2ImgInputs
from engine.pipeline.results import GenerationResult
from engine.schema.params import MASKED_CONTENT, MAX_SIZE, SIZE_MULTIPLE, Img2ImgParams

TITLE = "Outpainting"
A1111_TITLE = "Poor man's outpainting"
DIRECTIONS = ("left", "right", "up", "down")


def _round_up(value: int) -> int:
    return -(-value // SIZE_MULTIPLE) * SIZE_MULTIPLE


def outpaint_job(
    params: Img2ImgParams,
    picture: Image.Image,
    pixels: int,
    directions: tuple[str, ...] | list[str] = DIRECTIONS,
) -> tuple[Img2ImgParams, Img2ImgInputs]:
    """The inpainting job that extends `picture` by `pixels` on each side in `directions`. The
    new size is rounded up to the VAE's multiple of 8; the extra goes to the extended sides.
    Mask blur and masked content come from `params` (fill is the usual choice)."""
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown outpainting direction(s): {', '.join(sorted(unknown))}")
    if not directions or pixels <= 0:
        raise ValueError("choose at least one direction and a positive number of pixels")
    left, right, up, down = (pixels if d in directions else 0 for d in DIRECTIONS)
    width, height = _round_up(picture.width + left + right), _round_up(picture.height + up + down)
    if max(width, height) > MAX_SIZE:
        raise ValueError(
            f"the outpainted picture would be {width}×{height}; the limit is {MAX_SIZE} px a side"
        )
    # Give the rounding's extra pixels to the sides being extended (left/up first).
    extra_w, extra_h = width - (picture.width + left + right), height - (picture.height + up + down)
    left += extra_w if left else 0
    right += extra_w if not left and right else 0
    up += extra_h if up else 0
    down += extra_h if not up and down else 0

    canvas = Image.new("RGB", (width, height), (127, 127, 127))
    canvas.paste(picture.convert("RGB"), (left, up))
    blur = params.mask_blur or 0
    mask = _border_mask((width, height), (left, up, left + picture.width, up + picture.height), blur)
    latent_mask = _border_mask(
        (width, height), (left, up, left + picture.width, up + picture.height), 2 * blur
    )
    job_params = params.model_copy(
        update={
            "width": width,
            "height": height,
            "resize_mode": 0,
            "inpaint_full_res": 0,
            "inpainting_mask_invert": 0,
        }
    )
    return job_params, Img2ImgInputs([canvas], mask, latent_mask)


def _border_mask(size: tuple[int, int], inner: tuple[int, int, int, int], inset: int) -> Image.Image:
    """White (repaint) everywhere but the picture's box, shrunk by `inset` on the extended sides."""
    width, height = size
    x1, y1, x2, y2 = inner
    mask = Image.new("L", size, 255)
    box = (
        x1 + inset if x1 > 0 else 0,
        y1 + inset if y1 > 0 else 0,
        x2 - inset if x2 < width else width,
        y2 - inset if y2 < height else height,
    )
    if box[0] < box[2] and box[1] < box[3]:
        ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=0)
    return mask


def masked_content(value: int | str) -> int:
    """A1111 clients send the index of the choice (fill, original, latent noise, latent nothing);
    the UI sends its name."""
    if isinstance(value, int) and 0 <= value < len(MASKED_CONTENT):
        return value
    if value in MASKED_CONTENT:
        return MASKED_CONTENT.index(value)
    raise ValueError(f"Outpainting: masked content {value!r} is not one of {', '.join(MASKED_CONTENT)}")


def run(ctx: Any) -> GenerationResult:
    """The job, run as the inpainting job that extends its picture (every seed of the job)."""
    if ctx.inputs is None or not ctx.inputs.init_images:
        raise ValueError("Outpainting: give the picture to extend")
    own = {"mask_blur": ctx.args["mask_blur"], "inpainting_fill": masked_content(ctx.args["inpainting_fill"])}
    params = ctx.params.model_copy(update=own)
    job_params, inputs = outpaint_job(
        params, ctx.inputs.init_images[0], ctx.args["pixels"], ctx.args["direction"]
    )
    return ctx.process(job_params, inputs=inputs)
