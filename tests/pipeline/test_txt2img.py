"""The txt2img stage pipeline on tiny seeded components: reproducibility, batching, checkpoint
formats, agreement with diffusers, interrupt/skip/preview, the NaN fallback and saving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from engine.pipeline import stages
from engine.pipeline.txt2img import txt2img
from engine.schema.infotext import parse_infotext, read_png_parameters
from engine.service.jobs import Job
from tests.fakes.tiny_models import load_tiny
from tests.fakes.tiny_models import tiny_params as params

SIZE = 64  # 8×8 latents with the tiny ×8 VAE


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_params_give_bit_identical_images(model):
    a = txt2img(model, params()).images[0]
    b = txt2img(model, params()).images[0]
    assert np.array_equal(pixels(a), pixels(b))


def test_another_seed_gives_another_image(model):
    a = txt2img(model, params(seed=1)).images[0]
    b = txt2img(model, params(seed=2)).images[0]
    assert np.abs(pixels(a) - pixels(b)).mean() > 1


def test_random_seed_is_resolved_and_recorded(model):
    result = txt2img(model, params(seed=-1))
    assert 0 <= result.seeds[0] < 2**32
    assert result.params.seed == result.seeds[0]
    assert f"Seed: {result.seeds[0]}" in result.infotexts[0]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M"])
def test_batch_of_two_equals_two_single_runs(model, sampler):
    batch = txt2img(model, params(seed=7, batch_size=2, sampler_name=sampler))
    single_a = txt2img(model, params(seed=7, sampler_name=sampler)).images[0]
    single_b = txt2img(model, params(seed=8, sampler_name=sampler)).images[0]
    assert batch.seeds == [7, 8]
    # Batched convolutions may round differently in the last bit; a pixel may move by one level.
    assert np.abs(pixels(batch.images[0]) - pixels(single_a)).max() <= 1
    assert np.abs(pixels(batch.images[1]) - pixels(single_b)).max() <= 1


def test_batch_count_continues_seeds(model):
    result = txt2img(model, params(seed=10, batch_size=2, n_iter=2))
    assert result.seeds == [10, 11, 12, 13]
    assert len(result.images) == 4
    assert "Batch size: 2, Batch pos: 1" in result.infotexts[1]


def test_single_file_in_sd_layout_gives_the_same_image_as_the_diffusers_folder(model, tiny_single_file):
    from_file = load_tiny(tiny_single_file)
    a = txt2img(model, params(sampler_name="DPM++ 2M")).images[0]
    b = txt2img(from_file, params(sampler_name="DPM++ 2M")).images[0]
    assert np.array_equal(pixels(a), pixels(b))


def test_euler_matches_diffusers_pipeline(model):
    """Our loop and diffusers' StableDiffusionPipeline + EulerDiscreteScheduler (linspace spacing,
    A1111's "Uniform") on the same components, noise and timesteps give the same image."""
    from bench.reference import diffusers_euler_pipeline

    pipe = diffusers_euler_pipeline(model)
    p = params(sampler_name="Euler", scheduler="Uniform", steps=4)  # timesteps 999, 666, 333, 0
    noise = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(p.seed))
    with torch.inference_mode():
        theirs = pipe(
            p.prompt,
            negative_prompt=p.negative_prompt,
            num_inference_steps=p.steps,
            guidance_scale=p.cfg_scale,
            height=SIZE,
            width=SIZE,
            latents=noise,
            output_type="pil",
        ).images[0]
    ours = txt2img(model, p).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 2


def test_sd2_matches_diffusers_with_openclip_padding(tmp_path):
    """SD 2.x's OpenCLIP tokenizer pads with "!" after the end token (as A1111 and diffusers give
    it): our picture equals diffusers' on the same tiny SD2 components."""
    from bench.reference import diffusers_euler_pipeline
    from tests.fakes.tiny_models import tiny_components, write_diffusers_folder

    sd2 = load_tiny(write_diffusers_folder(tiny_components(seed=8, family="sd2"), tmp_path / "tiny-sd2"))
    assert sd2.tokenizer.pad_token == "!"
    p = params(sampler_name="Euler", scheduler="Uniform", steps=4)
    noise = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(p.seed))
    with torch.inference_mode():
        theirs = diffusers_euler_pipeline(sd2)(
            p.prompt, negative_prompt=p.negative_prompt, num_inference_steps=p.steps,
            guidance_scale=p.cfg_scale, height=SIZE, width=SIZE, latents=noise,
        ).images[0]  # fmt: skip
    assert np.abs(pixels(txt2img(sd2, p).images[0]) - pixels(theirs)).max() <= 2


def test_v_prediction_model_generates(tmp_path):
    from tests.fakes.tiny_models import tiny_components, write_diffusers_folder

    folder = write_diffusers_folder(
        tiny_components(seed=3, family="sd2", prediction_type="v_prediction"), tmp_path / "tiny-v"
    )
    v_model = load_tiny(folder)
    assert v_model.prediction_type == "v_prediction"
    image = txt2img(v_model, params()).images[0]
    assert image.size == (SIZE, SIZE)
    assert pixels(image).std() > 0


def test_long_prompt_is_encoded_in_chunks_not_cut(model):
    long_prompt = ", ".join(["a red circle on a blue background"] * 12)  # > 75 tokens
    conds, _, uncond = stages.encode_prompt(model, params(prompt=long_prompt)).at(0)
    assert conds[0].shape[1] == uncond.shape[1] == 77 * 2
    a = txt2img(model, params(prompt=long_prompt)).images[0]
    b = txt2img(model, params(prompt=long_prompt + ", green")).images[0]
    assert not np.array_equal(pixels(a), pixels(b))  # text past token 75 changes the picture


def test_progress_preview_and_step_count(model):
    job = Job(preview_every=2, preview_kind="Full")  # the VAE's decode: picture-sized
    txt2img(model, params(steps=6, n_iter=2), job=job)
    assert job.progress.job_step == job.progress.job_steps == 12
    assert job.preview is not None and job.preview.size == (SIZE, SIZE)


def job_that_presses(button: str, at_step: int) -> Job:
    """A Job whose user presses Interrupt/Skip ("interrupt" or "skip") once `at_step` steps are done,
    as the UI thread would between two steps."""
    job = Job()
    count_step = job.step_done

    def step_done() -> None:
        count_step()
        if job.progress.job_step == at_step:
            getattr(job, button)()

    job.step_done = step_done
    return job


def test_interrupt_stops_after_the_current_step(model):
    job = job_that_presses("interrupt", at_step=2)
    result = txt2img(model, params(steps=10, n_iter=3), job=job)
    assert result.interrupted
    assert job.progress.job_step == 2
    assert len(result.images) == 1  # A1111 keeps the partial image of the interrupted batch


def test_skip_abandons_only_the_current_batch(model):
    job = job_that_presses("skip", at_step=1)
    result = txt2img(model, params(steps=5, n_iter=2), job=job)
    assert len(result.images) == 2
    assert job.progress.job_step == 1 + 5


def test_nan_from_half_precision_vae_falls_back_to_fp32(tiny_diffusers_dir):
    half_vae = load_tiny(tiny_diffusers_dir, vae_dtype=torch.float16)
    real_decode = half_vae.vae.decode

    def decode(z, *args, **kwargs):
        out = real_decode(z, *args, **kwargs)
        if z.dtype == torch.float16:  # what a broken fp16 VAE does: NaN → a black image
            out.sample = torch.full_like(out.sample, math.nan)
        return out

    half_vae.vae.decode = decode
    result = txt2img(half_vae, params())
    assert half_vae.vae_dtype == torch.float32
    assert any("fp32" in note for note in result.notes)
    assert pixels(result.images[0]).std() > 0


def test_saved_png_carries_infotext_and_never_overwrites(model, tmp_path):
    save = stages.SaveOptions(outdir=tmp_path / "txt2img-images")
    first = txt2img(model, params(seed=5), save=save)
    second = txt2img(model, params(seed=5), save=save)
    path_a, path_b = first.paths[0], second.paths[0]
    assert path_a != path_b and path_a.exists() and path_b.exists()
    assert path_a.name.endswith("-5.png") and path_a.parent.parent == tmp_path / "txt2img-images"
    text = read_png_parameters(path_a)
    assert text == first.infotexts[0]
    fields = parse_infotext(text)
    assert fields["Steps"] == "4" and fields["Sampler"] == "Euler a" and fields["Size"] == f"{SIZE}x{SIZE}"
    assert fields["Model"] == model.info.name and fields["Model hash"] == model.short_hash


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"width": 100}, "multiple of 8"),
        ({"height": 4096}, "less than or equal to 2048"),
        ({"width": 32}, "greater than or equal to 64"),
        ({"steps": 0}, "greater than or equal to 1"),
        ({"steps": 1000}, "less than or equal to 150"),
        ({"cfg_scale": math.nan}, "finite number"),
        ({"sampler_name": "Imaginary"}, "unknown sampler"),
        ({"scheduler": "Sideways"}, "unknown schedule type"),
    ],
)
def test_bad_params_are_rejected_with_a_clear_message(bad, message):
    with pytest.raises(ValidationError, match=message):
        params(**bad)


def test_a_prompt_weight_past_float_range_is_refused_not_drawn_black(model):
    """Round brackets 800 deep weigh a word 1.1^800 ≈ 6e32: the picture would be all NaN."""
    with pytest.raises(ValueError, match="prompt weight is beyond 1000"):
        txt2img(model, params(prompt="(" * 800 + "x" + ")" * 800))
    assert txt2img(model, params(prompt="(x:999) [[[[y]]]]")).images  # strong but finite: drawn
