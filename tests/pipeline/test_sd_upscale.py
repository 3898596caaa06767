"""The SD upscale script on tiny seeded components: tiles cover the picture, scale × size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.models.loaders import load_checkpoint
from engine.models.registry import scan_folder
from engine.pipeline.sd_upscale import sd_upscale, tile_boxes
from engine.schema.params import Img2ImgParams
from engine.upscale.upscalers import UpscalerLibrary


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    (info,) = [i for i in scan_folder(tiny_diffusers_dir.parent) if i.path == tiny_diffusers_dir]
    return load_checkpoint(info, "cpu", torch.float32, torch.float32)


def picture() -> Image.Image:
    x = np.linspace(0, 255, 80)
    array = np.stack([np.tile(x, (64, 1)), np.tile(x[:64, None], (1, 80)), np.full((64, 80), 120)], -1)
    return Image.fromarray(array.astype(np.uint8))


def test_tiles_cover_the_picture_with_overlap():
    boxes = tile_boxes(160, 128, 64, 64, 16)
    assert boxes[0] == (0, 0, 64, 64) and boxes[-1] == (96, 64, 160, 128)
    covered = np.zeros((128, 160), int)
    for x1, y1, x2, y2 in boxes:
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_sd_upscale_doubles_the_size(model, tmp_path):
    params = Img2ImgParams(
        prompt="x", steps=4, sampler_name="Euler", seed=2, width=64, height=64, denoising_strength=0.3
    )
    result = sd_upscale(
        model, params, picture(), scale=2, upscaler="Lanczos", overlap=16, upscalers=UpscalerLibrary(tmp_path)
    )
    out = np.asarray(result.images[0], dtype=float)
    assert out.shape == (128, 160, 3)
    assert "SD upscale upscaler: Lanczos" in result.infotexts[0] and "Size: 160x128" in result.infotexts[0]
    # (Seams are judged on the built-in model, whose pictures are smooth: test_builtin_img2img.py.)
