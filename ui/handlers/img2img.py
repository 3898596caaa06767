"""img2img / Inpaint handlers: the tab's values → (Img2ImgParams, pictures) → a submitted job.

Plain functions over plain values (no Gradio), tested without a browser. The modes are A1111's:
img2img (a picture), Sketch (the picture as drawn over), Inpaint (a brush mask painted on the
picture), Inpaint sketch (coloured strokes: the mask is where they are), Inpaint upload (picture
and a separate mask), Batch (folders). Scripts (Outpainting, SD upscale, X/Y/Z plot, ...) are
extensions: the chosen one gets its values and takes the job over inside the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.pipeline import masking
from engine.pipeline.img2img import Img2ImgInputs
from engine.schema.params import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES, Img2ImgParams
from ui.common import EngineLike, check_finite
from ui.handlers.controlnet import units_from_values
from ui.handlers.inputs import as_number, open_picture
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import PARAM_FIELDS, RunUpdate, build_params, follow_job

MODES = ("img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch")
INPAINT_MODES = {"Inpaint", "Inpaint sketch", "Inpaint upload"}

# The values the img2img tabs add to txt2img's PARAM_FIELDS, by name.
IMG2IMG_FIELDS = (
    "mode",
    "init_image",
    "sketch",
    "inpaint",
    "inpaint_sketch",
    "upload_image",
    "upload_mask",
    "batch_input_dir",
    "batch_output_dir",
    "batch_mask_dir",
    "batch_use_png_info",
    "resize_mode",
    "resize_by",  # "Resize to" or "Resize by"
    "scale_by",
    "denoising_strength",
    "mask_blur",
    "mask_alpha",
    "inpainting_mask_invert",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "script",
)
ALL_FIELDS = (*PARAM_FIELDS, *IMG2IMG_FIELDS)
IMG2IMG_NUMBERS = ("denoising_strength", "mask_blur", "inpaint_full_res_padding")
# Radio choices: the schema stores the index, the tab shows the name.
IMG2IMG_CHOICES = {
    "resize_mode": (RESIZE_MODES, "Resize mode"),
    "inpainting_mask_invert": (MASK_MODES, "Mask mode"),
    "inpainting_fill": (MASKED_CONTENT, "Masked content"),
    "inpaint_full_res": (INPAINT_AREAS, "Inpaint area"),
}


def editor_parts(value: Any) -> tuple[Image.Image | None, list[Image.Image], Image.Image | None]:
    """(background, layers, composite) of a gr.ImageEditor value (a dict with those keys, or an
    EditorValue); a plain image counts as a background with nothing drawn."""
    if value is None:
        return None, [], None
    if isinstance(value, Image.Image):
        return value, [], value
    get = value.get if isinstance(value, Mapping) else lambda key: getattr(value, key, None)
    layers = [layer for layer in (get("layers") or []) if layer is not None]
    return get("background"), layers, get("composite")


def painted_mask(background: Image.Image, layers: list[Image.Image]) -> Image.Image:
    """The union of every brush layer's strokes, as an L mask (255 = painted) at the picture's size."""
    mask = Image.new("L", background.size, 0)
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != background.size:
            alpha = alpha.resize(background.size, Image.Resampling.NEAREST)
        mask = Image.fromarray(np.maximum(np.asarray(mask), np.asarray(alpha)))
    return mask


def _choice(value: Any, choices: tuple[str, ...], name: str) -> int:
    if isinstance(value, str):
        if value not in choices:
            raise ValueError(f"{name}: unknown choice {value!r}")
        return choices.index(value)
    return int(value or 0)


def _pictures(mode: str, v: Mapping[str, Any]) -> Img2ImgInputs:
    """The job's pictures for `mode`."""
    if mode == "img2img":
        picture = open_picture(v.get("init_image"), "img2img")
        if picture is None:
            raise ValueError("img2img: upload a picture first")
        return Img2ImgInputs([picture])
    if mode == "Sketch":
        _, _, composite = editor_parts(v.get("sketch"))
        if composite is None:
            raise ValueError("Sketch: upload or draw a picture first")
        return Img2ImgInputs([composite])
    if mode == "Inpaint":
        background, layers, _ = editor_parts(v.get("inpaint"))
        if background is None:
            raise ValueError("Inpaint: upload a picture, then paint the area to repaint")
        return Img2ImgInputs([background], painted_mask(background, layers))
    if mode == "Inpaint sketch":
        background, _, composite = editor_parts(v.get("inpaint_sketch"))
        if background is None or composite is None:
            raise ValueError("Inpaint sketch: upload a picture, then draw over the area to repaint")
        start, mask = masking.sketch_to_mask(
            background, composite, int(v.get("mask_alpha") or 0), int(v.get("mask_blur") or 0)
        )
        return Img2ImgInputs([start], mask)
    if mode == "Inpaint upload":
        picture = open_picture(v.get("upload_image"), "Inpaint upload")
        mask = open_picture(v.get("upload_mask"), "Inpaint upload mask")
        if picture is None or mask is None:
            raise ValueError("Inpaint upload: upload both the picture and its mask")
        return Img2ImgInputs([picture], mask)
    raise ValueError(f"unknown img2img mode {mode!r}")


def _size(v: Mapping[str, Any], picture: Image.Image | None) -> tuple[Any, Any]:
    """Width and height: the sliders ("Resize to"), or the picture's size × scale ("Resize by"),
    rounded to the multiple of 8 the model needs."""
    if v.get("resize_by") == "Resize by" and picture is not None:
        scale = float(v.get("scale_by") or 1.0)
        return (
            max(64, int(math.floor(picture.width * scale / 8 + 0.5)) * 8),
            max(64, int(math.floor(picture.height * scale / 8 + 0.5)) * 8),
        )
    return v.get("width"), v.get("height")


def build_img2img_params(v: Mapping[str, Any], picture: Image.Image | None = None) -> Img2ImgParams:
    width, height = _size(v, picture)
    sized = {**v, "width": width, "height": height}
    base = build_params(*(sized.get(name) for name in PARAM_FIELDS))  # the txt2img part, validated
    common = {key: value for key, value in base.model_dump().items() if key != "denoising_strength"}
    # What the tab sent; a value it leaves out takes the schema's default (defined once, there).
    own = {name: as_number(v[name]) for name in IMG2IMG_NUMBERS if v.get(name) is not None}
    for name, (choices, label) in IMG2IMG_CHOICES.items():
        if v.get(name) is not None:
            own[name] = _choice(v[name], choices, label)
    return Img2ImgParams(**common, **own)


def submit_img2img(engine: EngineLike, v: Mapping[str, Any], control_values: Sequence[Any] = ()) -> Any:
    """Build the job the tab's values describe and submit it; ValueError for what is missing."""

    check_finite(v)
    control = units_from_values(control_values, open_picture)
    mode = v.get("mode") or "img2img"
    if mode == "Batch":
        params = build_img2img_params(v)
        if not v.get("batch_input_dir") or not v.get("batch_output_dir"):
            raise ValueError("Batch: give an input folder and an output folder")
        return engine.submit_img2img_batch(
            params,
            Path(str(v["batch_input_dir"]).strip()),
            Path(str(v["batch_output_dir"]).strip()),
            Path(str(v["batch_mask_dir"]).strip()) if v.get("batch_mask_dir") else None,
            bool(v.get("batch_use_png_info")),
            control=control or None,
            extension_args=v.get("extension_args") or None,
        )
    inputs = _pictures(mode, v)
    params = build_img2img_params(v, inputs.init_images[0])
    if mode not in INPAINT_MODES:
        params, inputs = params.without_mask_options(), Img2ImgInputs(inputs.init_images)
    return engine.submit_img2img(
        params,
        inputs,
        control=control or None,
        extension_args=v.get("extension_args") or None,
        script=v.get("script_call"),
    )


def run_img2img(
    engine: EngineLike,
    jobs: SessionJobs,
    session: str,
    values: Mapping[str, Any],
    control_values: Sequence[Any] = (),
) -> Iterator[RunUpdate]:
    """Submit the img2img / inpaint job and report on it until it finishes."""
    yield from follow_job(jobs, session, lambda: submit_img2img(engine, values, control_values))
