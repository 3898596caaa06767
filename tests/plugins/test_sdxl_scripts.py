"""The scripts on SDXL checkpoints through the engine's one submit path: SD upscale and
Outpainting on an SDXL model, and an X/Y/Z plot whose Checkpoint axis mixes SD 1.x (the built-in
model) and SDXL."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.pipeline.img2img import Img2ImgInputs
from engine.plugins.script_jobs import ScriptCall
from engine.schema.infotext import parse_infotext
from engine.schema.params import GenerationParams, Img2ImgParams


@pytest.fixture(scope="module")
def engine(tmp_path_factory, sdxl_files):
    from engine.service.facade import Engine

    data = tmp_path_factory.mktemp("sdxl-scripts")
    return Engine(data_dir=data, models_dirs=[sdxl_files["base"].parent], device="cpu")


def finished(job):
    job.wait()
    if job.error is not None:
        raise job.error
    return job.result


def img2img_params(**kw) -> Img2ImgParams:
    base = dict(prompt="a red circle", steps=3, sampler_name="Euler", seed=2, width=64, height=64)
    return Img2ImgParams(**{**base, "checkpoint": "xl-base", "denoising_strength": 0.4, **kw})


def picture(size=(80, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_sd_upscale_on_sdxl(engine):
    call = ScriptCall("SD upscale", {"scale_factor": 2.0, "upscaler_index": "Lanczos", "overlap": 16})
    result = finished(engine.submit_img2img(img2img_params(), Img2ImgInputs([picture()]), script=call))
    assert result.images[0].size == (160, 128)
    assert parse_infotext(result.infotexts[0])["Model"] == "xl-base"


def test_outpainting_on_sdxl_keeps_the_picture(engine):
    source = picture((64, 48))
    call = ScriptCall("Outpainting", {"pixels": 16, "direction": ["left"], "mask_blur": 4})
    result = finished(
        engine.submit_img2img(img2img_params(denoising_strength=0.9), Img2ImgInputs([source]), script=call)
    )
    out = np.asarray(result.images[0])
    assert out.shape == (48, 80, 3) and np.array_equal(out[:, 48:], np.asarray(source)[:, 32:])


def test_xyz_checkpoint_axis_mixes_sd1_and_sdxl(engine):
    builtin = engine.models.builtin_title()
    call = ScriptCall(
        "X/Y/Z plot",
        {"x_type": "Checkpoint name", "x_values": f"{builtin}, xl-base", "include_lone_images": True},
    )
    params = GenerationParams(
        prompt="a red circle", steps=3, sampler_name="Euler", seed=5, width=64, height=64
    )
    result = finished(engine.submit_txt2img(params, script=call))
    grid, *cells = result.images
    assert grid.width >= 2 * 64 and len(cells) == 2
    models = [parse_infotext(text)["Model"] for text in result.infotexts[1:]]
    assert models == [builtin, "xl-base"]


def test_xyz_refiner_axes(engine):
    call = ScriptCall(
        "X/Y/Z plot",
        {
            "x_type": "Refiner checkpoint", "x_values": "None, xl-refiner",
            "y_type": "Refiner switch at", "y_values": "0.5, 0.8", "include_lone_images": True,
        },
    )  # fmt: skip
    params = GenerationParams(
        prompt="a red circle",
        steps=4,
        sampler_name="Euler",
        seed=5,
        width=64,
        height=64,
        checkpoint="xl-base",
    )
    result = finished(engine.submit_txt2img(params, script=call))
    cells = [parse_infotext(text) for text in result.infotexts[1:]]
    assert len(cells) == 4
    assert [c.get("Refiner", "").split(" [")[0] for c in cells] == ["", "xl-refiner", "", "xl-refiner"]
    assert [c.get("Refiner switch at") for c in cells] == [None, "0.5", None, "0.8"]


def test_the_settings_give_the_refiner_s_aesthetic_scores(engine):
    assert (
        engine.settings.sdxl_refiner_high_aesthetic_score,
        engine.settings.sdxl_refiner_low_aesthetic_score,
    ) == (
        6.0,
        2.5,
    )
    engine.update_settings(sdxl_refiner_high_aesthetic_score=8.0, sdxl_refiner_low_aesthetic_score=1.5)
    try:
        params = GenerationParams(prompt="a cat", steps=2, width=64, height=64, checkpoint="xl-refiner")
        job = engine.submit_txt2img(params)
        finished(job)
        assert job.aesthetic_scores == (8.0, 1.5)
    finally:
        engine.update_settings(sdxl_refiner_high_aesthetic_score=6.0, sdxl_refiner_low_aesthetic_score=2.5)
