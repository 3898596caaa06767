"""NaN and ±Infinity in the UI's number inputs: a browser cannot type them, but a client driving the
page's events can send them. Every numeric field of txt2img, img2img, Upscaling and the ControlNet
units answers with a message naming the field, and no job is submitted."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from tests.fakes.fake_engine import FakeEngine
from tests.fakes.ui_values import TXT2IMG_VALUES as VALUES
from tests.fakes.ui_values import extras_values, img2img_values
from ui.handlers.controlnet import UNIT_FIELDS, unit_from_values
from ui.handlers.img2img import submit_img2img
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import OPTIONAL_FIELDS, PARAM_FIELDS, follow_job, run_txt2img
from ui.tabs.upscaling import submit_extras

NOT_FINITE = (math.nan, math.inf, -math.inf)
TXT2IMG_NUMBERS = ("steps", "cfg_scale", "seed", "width", "height", "n_iter", "batch_size")
HIRES_NUMBERS = ("hr_second_pass_steps", "denoising_strength", "hr_scale", "hr_resize_x", "hr_resize_y")
VARIATION_NUMBERS = ("subseed", "subseed_strength")
# The scripts' numbers (Outpainting, SD upscale) are checked by their argument models, for the UI
# and the API alike: tests/plugins/test_img2img_scripts.py.
IMG2IMG_NUMBERS = ("denoising_strength", "mask_blur", "inpaint_full_res_padding", "scale_by")
EXTRAS_NUMBERS = ("upscaling_resize", "upscaling_resize_w", "upscaling_resize_h", "upscaler_2_visibility")
UNIT_NUMBERS = ("weight", "guidance_start", "guidance_end", "processor_res", "threshold_a", "threshold_b")


def final_message(updates) -> str:
    return list(updates)[-1].message or ""


@pytest.mark.parametrize("name", [*TXT2IMG_NUMBERS, *HIRES_NUMBERS, *VARIATION_NUMBERS])
def test_txt2img_numbers(name):
    base = dict(zip(PARAM_FIELDS, VALUES, strict=False))
    base.update({n: None for n in OPTIONAL_FIELDS}, enable_hr=True, override_settings=None, styles=None)
    for value in NOT_FINITE:
        engine = FakeEngine()
        values = tuple({**base, name: value}[field] for field in PARAM_FIELDS)
        message = final_message(run_txt2img(engine, SessionJobs(), "s", values, poll_seconds=0.01))
        assert name in message and "finite" in message, (value, message)
        assert engine.submitted == []


@pytest.mark.parametrize("name", [*TXT2IMG_NUMBERS, *IMG2IMG_NUMBERS])
def test_img2img_numbers(name):
    changes = {
        "init_image": Image.new("RGB", (96, 64), "red"),
        "resize_by": "Resize by" if name == "scale_by" else "Resize to",
    }
    for value in NOT_FINITE:
        engine = FakeEngine()
        v = img2img_values(**changes, **{name: value})
        message = final_message(follow_job(SessionJobs(), "s", lambda e=engine, v=v: submit_img2img(e, v)))
        assert name in message and "finite" in message, (value, message)
        assert engine.submitted == []


@pytest.mark.parametrize("name", EXTRAS_NUMBERS)
def test_upscaling_numbers(name, tmp_path):
    path = tmp_path / "in.png"
    Image.new("RGB", (32, 32), "red").save(path)
    for value in NOT_FINITE:
        engine = FakeEngine()
        values = extras_values(image=str(path), resize="Scale to", **{name: value})
        message = final_message(
            follow_job(SessionJobs(), "s", lambda e=engine, v=values: submit_extras(e, v))
        )
        assert name in message and "finite" in message, (value, message)


@pytest.mark.parametrize("name", UNIT_NUMBERS)
def test_controlnet_unit_numbers(name):
    from pydantic import ValidationError

    base = dict.fromkeys(UNIT_FIELDS) | {"enabled": True, "module": "canny", "model": "x", "weight": 1.0}
    base |= {"guidance_start": 0.0, "guidance_end": 1.0, "processor_res": 512.0}
    base |= {"threshold_a": 100.0, "threshold_b": 200.0}
    for value in NOT_FINITE:
        with pytest.raises(ValidationError) as refused:
            unit_from_values({**base, name: value})
        assert refused.value.errors()[0]["loc"] == (name,)
