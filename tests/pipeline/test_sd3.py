"""SD 3 through Atelier's own stages, on tiny random SD 3 components written as a diffusers folder:
txt2img and img2img against diffusers' SD 3 pipelines on the same components, σ's and initial noise
(with and without T5), every sampler on the flow model, prompt syntax on the CLIP encoders, and the
clear message for a missing T5 tokenizer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bench.reference import diffusers_sd3_img2img_pipeline, diffusers_sd3_pipeline
from engine.pipeline import img2img as i2i
from engine.pipeline import stages
from engine.pipeline.latents import encode, to_tensor
from engine.pipeline.txt2img import txt2img
from engine.sampling.registry import SAMPLERS
from engine.schema.params import Img2ImgParams
from engine.schema.sampler_params import sampler_options
from tests.fakes.sampling import count_network_calls, expected_unet_calls
from tests.fakes.tiny_flow import write_tiny_sd3
from tests.fakes.tiny_models import load_tiny, tiny_params

SIZE = 64


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return write_tiny_sd3(tmp_path_factory.mktemp("checkpoints") / "tiny-sd3")


@pytest.fixture(scope="module")
def sd3(sd3_folder):
    return load_tiny(sd3_folder)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def euler(**kw):
    return tiny_params(sampler_name="Euler", scheduler="Simple", **kw)


def noise_of(seed: int) -> torch.Tensor:
    """Our first noise draw for `seed`: x at σ = 1 is the noise itself."""
    return torch.randn((1, 16, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(seed))


def theirs(model, p, **kw) -> Image.Image:
    sigmas = stages.make_sigmas(model, p)
    with torch.inference_mode():
        return diffusers_sd3_pipeline(model)(
            p.prompt,
            negative_prompt=p.negative_prompt,
            num_inference_steps=p.steps,
            sigmas=sigmas[:-1].tolist(),  # diffusers appends the final 0
            guidance_scale=p.cfg_scale,
            height=SIZE,
            width=SIZE,
            latents=noise_of(p.seed),
            **kw,
        ).images[0]


def test_the_folder_loads_as_an_sd3_flow_model(sd3):
    assert sd3.family == "sd3" and sd3.prediction_type == "flow" and sd3.flow_shift == 3.0
    assert sd3.latent_channels == 16 and sd3.text_encoder_3 is not None
    sigmas = sd3.model_sigmas()
    assert sigmas.space.flow and sigmas.sigma_max == 1.0
    assert float(sigmas.model_timestep(torch.tensor(0.5))) == 500.0  # SD 3 takes σ × 1000


@pytest.mark.parametrize("negative", ["blurry", ""])
def test_txt2img_matches_diffusers_sd3_pipeline(sd3, negative):
    p = euler(steps=4, negative_prompt=negative)
    ours = txt2img(sd3, p).images[0]
    diff = np.abs(pixels(ours) - pixels(theirs(sd3, p)))
    assert diff.max() <= 2, diff.max()
    assert pixels(ours).std() > 5  # a picture, not a flat field


def test_img2img_matches_diffusers_sd3_img2img(sd3):
    """Both start from the same latents of the same picture, noised by the flow rule
    (1 − σ)·x₀ + σ·ε at the first σ of the strength's tail, and denoise over the same σ's."""
    src = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    p = Img2ImgParams(**{**euler(steps=6).model_dump(), "denoising_strength": 0.6})
    tail = stages.strength_tail(sd3, p, p.denoising_strength)
    latents = encode(sd3, to_tensor([src], sd3.device))
    with torch.inference_mode():
        reference = diffusers_sd3_img2img_pipeline(
            sd3
        )(
            p.prompt,
            negative_prompt=p.negative_prompt,
            image=latents,  # 16 channels: taken as latents (the posterior's mean, as we encode)
            strength=1.0,  # the whole of the σ's handed over: our tail
            sigmas=tail[:-1].tolist(),
            num_inference_steps=len(tail) - 1,
            guidance_scale=p.cfg_scale,
            generator=torch.Generator().manual_seed(p.seed),
        ).images[0]
    assert 0 < float(tail[0]) < 1
    ours = i2i.img2img(sd3, p, i2i.Img2ImgInputs([src])).images[0]
    assert np.abs(pixels(ours) - pixels(reference)).max() <= 2


def test_without_t5_its_tokens_are_zeros_as_in_diffusers(sd3_folder, tmp_path):
    folder = tmp_path / "no-t5"
    shutil.copytree(sd3_folder, folder)
    shutil.rmtree(folder / "text_encoder_3")
    model = load_tiny(folder)
    assert model.text_encoder_3 is None
    p = euler(steps=3)
    diff = np.abs(pixels(txt2img(model, p).images[0]) - pixels(theirs(model, p)))
    assert diff.max() <= 2, diff.max()


def test_a_missing_t5_tokenizer_says_where_to_put_it(sd3_folder, tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(sd3_folder, folder)
    shutil.rmtree(folder / "tokenizer_3")
    with pytest.raises(
        ValueError, match=r"SD 3 needs the T5 tokenizer: put its tokenizer.json .* in .*tokenizer_3"
    ):
        load_tiny(folder)


def test_prompt_weights_act_on_clip_and_t5_reads_the_plain_words(sd3):
    plain = stages.encode_prompt(sd3, euler(prompt="a red circle")).at(0)[0][0]
    weighted = stages.encode_prompt(sd3, euler(prompt="a (red:1.5) circle")).at(0)[0][0]
    clip_tokens = 77
    assert plain.hidden.shape == (1, clip_tokens + 256, 32) and plain.pooled.shape == (1, 32 + 48)
    assert not torch.allclose(plain.hidden[:, :clip_tokens], weighted.hidden[:, :clip_tokens])
    assert torch.equal(plain.hidden[:, clip_tokens:], weighted.hidden[:, clip_tokens:])  # T5: "a red circle"
    assert torch.equal(plain.hidden[:, :clip_tokens, 32 + 48 :], torch.zeros(1, clip_tokens, 32 - 32))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_on_sd3(sd3, name, monkeypatch):
    calls = count_network_calls(sd3, monkeypatch)
    p = tiny_params(sampler_name=name, steps=4)
    image = txt2img(sd3, p).images[0]
    assert pixels(image).std() > 1
    expected = expected_unet_calls(name, stages.make_sigmas(sd3, p))
    if expected is not None and name != "Restart":
        assert len(calls) == expected


def test_the_shift_override_changes_the_schedule_and_is_written_to_the_infotext(sd3):
    from engine.schema.infotext import params_from_infotext

    own = stages.make_sigmas(sd3, euler(steps=4))
    p = euler(steps=4, shift=6.0)
    shifted = stages.make_sigmas(sd3, p, sampler_options(p))
    assert own[0] == shifted[0] == 1.0 and torch.all(shifted[1:-1] > own[1:-1])  # more steps high
    result = txt2img(sd3, p)
    assert "Shift: 6," in result.infotexts[0]
    assert params_from_infotext(result.infotexts[0])[0].shift == 6.0
    assert "Shift" not in txt2img(sd3, euler(steps=2)).infotexts[0]  # the model's own: not written


def test_controlnet_and_an_inpainting_unet_input_are_refused_clearly(sd3):
    from engine.pipeline.networks import network_call

    with pytest.raises(ValueError, match="ControlNet does not work with SD 3 models yet"):
        network_call(sd3, control=object())
    with pytest.raises(ValueError, match="SD 3 has no inpainting model"):
        network_call(sd3, image_cond=torch.zeros(1, 5, 8, 8))


def test_the_manager_knows_an_sd3_folder_without_loading_it(sd3_folder):
    from engine.models.manager import ModelManager

    manager = ModelManager(root=sd3_folder.parent, extra_dirs=[sd3_folder.parent], device="cpu")
    assert manager.family_of("tiny-sd3") == "sd3"
    native, sizes = manager.size_choices("tiny-sd3")
    assert native == 64 and (64, 64) in sizes  # the transformer's sample size × the VAE's factor
    assert manager.current is None


def test_inpainting_on_sd3_keeps_every_unmasked_pixel(sd3):
    """SD 3 inpaints with the model itself: the kept latents are blended in at every step (in
    x̂₀, so the flow noise rule needs nothing of its own) and the kept pixels pasted back."""
    src = Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    p = Img2ImgParams(**{**euler(steps=4).model_dump(), "denoising_strength": 0.8, "mask_blur": 0})
    out = pixels(i2i.img2img(sd3, p, i2i.Img2ImgInputs([src], mask)).images[0])
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], pixels(src)[keep])
    assert np.abs(out - pixels(src))[~keep].mean() > 5


def test_t5_is_a_group_of_its_own_in_the_memory_plan(sd3):
    """Under medvram T5 (the largest text encoder there is) takes its own turn on the device and
    leaves it once the prompt is encoded; the plan counts it as a part of its own."""
    import dataclasses

    from engine.models.memory_plan import GPU_ONLY, MEDVRAM, Footprint, module_bytes
    from engine.models.residency import Residency

    groups = sd3.part_groups()
    assert groups["t5"] == [sd3.text_encoder_3] and sd3.text_encoder_3 not in groups["text"]
    footprint = Footprint.of(sd3, SIZE, SIZE, 1)
    assert footprint.beside == (module_bytes([sd3.text_encoder_3]),)
    expected = pixels(txt2img(sd3, euler(steps=2)).images[0])
    residency = Residency(torch.device("cpu"))
    planned = dataclasses.replace(sd3, residency=residency)
    residency.apply(MEDVRAM, planned.part_groups())
    turns: list[str] = []
    real_use = residency.use
    residency.use = lambda name: turns.append(name) or real_use(name)
    try:
        out = pixels(txt2img(planned, euler(steps=2)).images[0])
    finally:
        residency.apply(GPU_ONLY, planned.part_groups())
    changes = [name for i, name in enumerate(turns) if i == 0 or turns[i - 1] != name]
    assert changes == ["text", "t5", "unet", "vae"]
    assert np.array_equal(out, expected)
