"""Hires fix on tiny seeded components: the second pass runs (steps counted), at the requested
size, with latent and picture upscalers, its own steps / prompts, and A1111's infotext keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.loaders import load_checkpoint
from engine.models.registry import scan_folder
from engine.pipeline import hires
from engine.pipeline.txt2img import txt2img
from engine.schema.infotext import params_from_infotext, parse_infotext
from engine.schema.params import GenerationParams
from engine.service.jobs import Job
from engine.upscale.upscalers import UpscalerLibrary


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    (info,) = [i for i in scan_folder(tiny_diffusers_dir.parent) if i.path == tiny_diffusers_dir]
    return load_checkpoint(info, "cpu", torch.float32, torch.float32)


def params(**kw) -> GenerationParams:
    base = dict(
        prompt="a red circle", steps=6, sampler_name="Euler", seed=3, width=64, height=64, enable_hr=True
    )
    return GenerationParams(**{**base, **kw})


def run(model, p, tmp_path=None):
    job = Job()
    library = UpscalerLibrary(tmp_path) if tmp_path is not None else None
    return txt2img(model, p, job=job, upscalers=library), job


def test_latent_hires_doubles_the_size_and_runs_the_second_pass(model):
    result, job = run(model, params(denoising_strength=0.5))
    assert result.images[0].size == (128, 128)
    assert job.progress.job_steps == 6 + 4 and job.progress.job_step == 10  # int(0.5 · 6) + 1
    info = parse_infotext(result.infotexts[0])
    assert (info["Hires upscale"], info["Hires upscaler"], info["Denoising strength"]) == (
        "2",
        "Latent",
        "0.5",
    )
    assert "Hires steps" not in info  # 0: the same steps, not written
    assert params_from_infotext(result.infotexts[0])[0].enable_hr


def test_hires_steps_size_sampler_and_prompt(model):
    p = params(
        hr_second_pass_steps=3,
        hr_resize_x=96,
        hr_resize_y=80,
        hr_sampler_name="DPM++ 2M",
        denoising_strength=1.0,
    )
    result, job = run(model, p)
    assert result.images[0].size == (96, 80)
    assert job.progress.job_steps == 6 + 3
    info = parse_infotext(result.infotexts[0])
    assert (
        info["Hires resize"] == "96x80" and info["Hires steps"] == "3" and info["Hires sampler"] == "DPM++ 2M"
    )
    other, _ = run(model, p.model_copy(update={"hr_prompt": "a blue star"}))
    assert (
        np.abs(np.asarray(other.images[0], dtype=int) - np.asarray(result.images[0], dtype=int)).mean() > 0.5
    )
    assert parse_infotext(other.infotexts[0])["Hires prompt"] == "a blue star"


@pytest.mark.parametrize("upscaler", ["Lanczos", "Latent (nearest-exact)", "Latent (bicubic antialiased)"])
def test_every_kind_of_upscaler(model, tmp_path, upscaler):
    result, _ = run(model, params(hr_upscaler=upscaler, hr_scale=1.5), tmp_path)
    assert result.images[0].size == (96, 96)


def test_hires_off_writes_no_hires_keys(model):
    result, job = run(model, params(enable_hr=False))
    assert result.images[0].size == (64, 64) and job.progress.job_steps == 6
    assert "Hires" not in result.infotexts[0] and "Denoising strength" not in result.infotexts[0]


def test_an_unknown_hires_upscaler_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="unknown hires upscaler"):
        run(model, params(hr_upscaler="4x-Nope"), tmp_path)


def test_target_size_from_one_side():
    assert hires.target_size(params(width=128, height=64, hr_resize_x=256)) == (256, 128)
    assert hires.target_size(params(width=64, height=72, hr_scale=1.25)) == (80, 88)


def test_the_txt2img_form_turns_into_hires_params():
    from ui.handlers.txt2img import build_params

    base = ("a cat", "", "Euler a", "Automatic", 20.0, 7.0, 1.0, 128.0, 128.0, 1.0, 1.0, [], [])
    hires_values = (True, "Lanczos", 10.0, 0.45, 1.5, 0.0, 0.0, "Use same sampler", "Karras", "", "")
    p = build_params(*base, *hires_values)
    assert p.enable_hr and p.hr_upscaler == "Lanczos" and p.hr_second_pass_steps == 10
    assert (p.denoising_strength, p.hr_scale, p.hr_sampler_name, p.hr_scheduler) == (
        0.45,
        1.5,
        None,
        "Karras",
    )
    assert not build_params(*base).enable_hr  # other tabs pass no hires values
