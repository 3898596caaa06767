"""img2img, inpainting and outpainting on the built-in model, judged the way a user would: strength 1
is txt2img, a middle strength keeps the picture's layout, the painted area turns into what the
prompt asks for while every other pixel stays, and outpainting grows the canvas around the
original. The automatic scorer (world.scorer) reads colour, shape and place."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.pipeline import img2img as i2i
from engine.pipeline.txt2img import txt2img
from engine.plugins.script_jobs import ScriptCall
from engine.schema.params import GenerationParams, Img2ImgParams
from world.scenes import render, scene_from_caption
from world.scorer import describe

pytestmark = pytest.mark.slow  # the built-in model on many prompts

SIZE = 128
BASE = dict(steps=20, sampler_name="Euler a", seed=11, width=SIZE, height=SIZE)
SOURCE_CAPTION = "a large red circle at the top left on a blue background"
PROMPT = "a large green square at the bottom right on a yellow background"
# The source's own place: the model follows position words, so a prompt naming another place would
# rightly move the shape; with this one a middle strength has to keep the layout.
SAME_PLACE = "a large green square at the top left on a yellow background"


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return Image.fromarray(render(scene_from_caption(SOURCE_CAPTION, np.random.default_rng(0)), SIZE))


def run(model, picture, mask=None, **kw):
    params = Img2ImgParams(**{**BASE, "prompt": PROMPT, **kw})
    return np.asarray(i2i.img2img(model, params, i2i.Img2ImgInputs([picture], mask)).images[0])


def test_strength_zero_returns_the_input(builtin_model, source):
    assert np.array_equal(run(builtin_model, source, denoising_strength=0.0), np.asarray(source))


def test_strength_one_is_txt2img_with_the_same_seed(builtin_model, source):
    txt = np.asarray(txt2img(builtin_model, GenerationParams(prompt=SAME_PLACE, **BASE)).images[0])
    out = run(builtin_model, source, denoising_strength=1.0, prompt=SAME_PLACE)
    assert np.abs(out.astype(int) - txt.astype(int)).mean() < 3  # the input's latents barely count at σ_max
    seen = describe(out)
    assert (seen.background, seen.colour, seen.shape, seen.position) == (
        "yellow",
        "green",
        "square",
        "top left",
    )
    moved = describe(run(builtin_model, source, denoising_strength=1.0))  # another place: it goes there
    assert (moved.background, moved.colour, moved.position) == ("yellow", "green", "bottom right")


def test_a_middle_strength_keeps_the_layout_and_follows_the_prompt(builtin_model, source):
    out = describe(run(builtin_model, source, denoising_strength=0.5, prompt=SAME_PLACE))
    before = describe(np.asarray(source))
    assert out.position == before.position == "top left"  # the shape stays where it was ...
    assert np.hypot(*np.subtract(out.centroid, before.centroid)) < 8
    assert (out.background, out.colour) == ("yellow", "green")  # ... in the prompt's colours


@pytest.mark.parametrize("content", [0, 2, 3])  # fill, latent noise, latent nothing
def test_inpainting_paints_the_prompt_into_the_mask_only(builtin_model, content):
    picture = Image.new("RGB", (SIZE, SIZE), (30, 60, 200))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (24, 24, 104, 104))
    out = run(
        builtin_model,
        picture,
        mask,
        prompt="a large yellow circle in the center on a blue background",
        denoising_strength=1.0,
        inpainting_fill=content,
        mask_blur=4,
        seed=3,
    )
    far = np.ones((SIZE, SIZE), bool)
    far[24 - 12 : 104 + 12, 24 - 12 : 104 + 12] = False  # beyond the blurred edge
    assert np.array_equal(out[far], np.asarray(picture)[far])
    seen = describe(out)
    assert (seen.background, seen.colour) == ("blue", "yellow")
    x, y = seen.centroid
    assert 24 <= x <= 104 and 24 <= y <= 104  # the new shape is inside the painted area


def test_only_masked_inpainting_keeps_the_size_and_the_rest(builtin_model, source):
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (72, 72, 120, 120))  # an empty corner of the picture
    out = run(
        builtin_model,
        source,
        mask,
        prompt="a large yellow circle in the center on a blue background",
        denoising_strength=1.0,
        inpainting_fill=2,
        inpaint_full_res=1,
        inpaint_full_res_padding=16,
        mask_blur=0,
    )
    assert out.shape == (SIZE, SIZE, 3)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(source)[keep])
    inside = out[72:120, 72:120].reshape(-1, 3).astype(int)
    yellow = (inside[:, 0] > 150) & (inside[:, 1] > 150) & (inside[:, 2] < 100)
    assert yellow.mean() > 0.1  # the crop was painted at full size: the shape fills part of it


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The app's engine on the built-in model: Outpainting and SD upscale are its scripts."""
    from engine.service.facade import Engine

    return Engine(data_dir=tmp_path_factory.mktemp("builtin-scripts"), device="cpu")


def script(engine, title: str, args: dict, picture: Image.Image, **kw):
    params = Img2ImgParams(**{**BASE, **kw})
    job = engine.submit_img2img(params, i2i.Img2ImgInputs([picture]), script=ScriptCall(title, args))
    job.wait()
    assert job.error is None, job.error
    return job.result


def test_outpainting_grows_the_canvas_around_the_original(engine, source):
    args = {"pixels": 64, "mask_blur": 4, "inpainting_fill": "fill"}
    result = script(engine, "Outpainting", args, source, prompt=SOURCE_CAPTION, denoising_strength=1.0)
    out = np.asarray(result.images[0])
    assert out.shape == (SIZE + 128, SIZE + 128, 3)
    # The seam: the mask reaches blur = 4 px into the original and its blur kernel 10 px further.
    inner = out[64 + 16 : 64 + SIZE - 16, 64 + 16 : 64 + SIZE - 16]
    assert np.array_equal(inner, np.asarray(source)[16:-16, 16:-16])  # the original, untouched
    border = np.concatenate([out[:48].reshape(-1, 3), out[-48:].reshape(-1, 3)]).astype(int)
    blue = np.abs(border.mean(0) - np.asarray(source)[64, 100].astype(int)).sum()
    assert blue < 90, border.mean(0)  # the new area continues the blue background


@pytest.mark.parametrize("overlap", [0, 32])
def test_sd_upscale_blends_its_tiles_without_seams(engine, overlap):
    from extensions.sd_upscale.tiles import tile_boxes

    src = Image.fromarray(render(scene_from_caption(SOURCE_CAPTION, np.random.default_rng(0)), 96))
    args = {"scale_factor": 2, "upscaler_index": "Lanczos", "overlap": overlap}
    result = script(
        engine, "SD upscale", args, src, steps=10, prompt=SOURCE_CAPTION, denoising_strength=0.5, seed=2
    )
    out = np.asarray(result.images[0], dtype=float)
    assert out.shape == (192, 192, 3)
    x1, y1, x2, y2 = tile_boxes(192, 192, SIZE, SIZE, overlap)[0]
    across_seam = np.abs(out[:, x2] - out[:, x2 - 1]).mean() + np.abs(out[y2] - out[y2 - 1]).mean()
    typical = np.median(np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))) * 2
    if overlap:
        assert across_seam < 3 * typical + 0.5  # blended: the tile edges cannot be told apart
    else:
        assert across_seam > 3 * typical + 0.5  # pasted without overlap: the measure sees the seam
