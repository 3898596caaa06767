"""What the tabs' components hand their handlers, as a browser would send them (Gradio numbers are
floats): a small valid job for txt2img, img2img and Upscaling, any field changed by keyword."""

from __future__ import annotations

from ui.handlers.img2img import ALL_FIELDS as IMG2IMG_FIELDS
from ui.tabs.upscaling import FIELDS as EXTRAS_FIELDS

# txt2img's PARAM_FIELDS, in order
TXT2IMG_VALUES = ("a red circle", "blurry", "Euler a", "Automatic", 4.0, 7.5, 42.0, 128.0, 128.0, 1.0, 2.0)

EXTRAS_BASE = {
    "mode": "Single image",
    "resize": "Scale by",
    "upscaling_resize": 2.0,
    "upscaling_resize_w": 300.0,
    "upscaling_resize_h": 200.0,
    "upscaling_crop": True,
    "upscaler_1": "Lanczos",
    "upscaler_2": "None",
    "upscaler_2_visibility": 0.0,
}


def extras_values(**kw):
    return {name: kw.get(name, EXTRAS_BASE.get(name)) for name in EXTRAS_FIELDS}


IMG2IMG_BASE = {
    "prompt": "a red circle",
    "negative_prompt": "",
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "steps": 4.0,
    "cfg_scale": 7.0,
    "seed": 5.0,
    "width": 128.0,
    "height": 128.0,
    "n_iter": 1.0,
    "batch_size": 1.0,
    "override_settings": [],
    "styles": [],
    "mode": "img2img",
    "resize_mode": "Just resize",
    "resize_by": "Resize to",
    "scale_by": 1.0,
    "denoising_strength": 0.6,
    "mask_blur": 4.0,
    "mask_alpha": 0.0,
    "inpainting_mask_invert": "Inpaint masked",
    "inpainting_fill": "original",
    "inpaint_full_res": "Whole picture",
    "inpaint_full_res_padding": 32.0,
    "script": "None",
}


def img2img_values(**changes):
    return {name: changes.get(name, IMG2IMG_BASE.get(name)) for name in IMG2IMG_FIELDS}
