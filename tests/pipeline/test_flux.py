"""Flux.1 through Atelier's own stages, on tiny random Flux components written as diffusers folders
(dev: distilled guidance and a size-dependent shift; schnell: neither): txt2img and img2img
against diffusers' Flux pipelines on the same components, σ's and initial noise, the shift
diffusers would compute, the Distilled CFG Scale, and every sampler on the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image

from bench.reference import diffusers_flux_img2img_pipeline, diffusers_flux_pipeline
from engine.pipeline import img2img as i2i
from engine.pipeline import stages
from engine.pipeline.latents import encode, to_tensor
from engine.pipeline.txt2img import txt2img
from engine.sampling.registry import SAMPLERS
from engine.schema.params import Img2ImgParams
from tests.fakes.sampling import count_network_calls, expected_unet_calls
from tests.fakes.tiny_flow import write_tiny_flux
from tests.fakes.tiny_models import load_tiny, tiny_params

SIZE = 64


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    write_tiny_flux(folder / "tiny-flux-dev")
    write_tiny_flux(folder / "tiny-flux-schnell", seed=1, guidance=False)
    return folder


@pytest.fixture(scope="module")
def dev(checkpoints):
    return load_tiny(checkpoints / "tiny-flux-dev")


@pytest.fixture(scope="module")
def schnell(checkpoints):
    return load_tiny(checkpoints / "tiny-flux-schnell")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def flux(**kw):
    """Flux as Forge runs it: real CFG 1 (one pass, no negative prompt)."""
    return tiny_params(**{"sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1, **kw})


def noise_of(seed: int) -> torch.Tensor:
    return torch.randn((1, 16, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(seed))


def theirs(model, p) -> Image.Image:
    sigmas = stages.make_sigmas(model, p)
    packed = FluxPipeline._pack_latents(noise_of(p.seed), 1, 16, SIZE // 8, SIZE // 8)
    with torch.inference_mode():
        return diffusers_flux_pipeline(model)(
            p.prompt,
            num_inference_steps=p.steps,
            sigmas=sigmas[:-1].tolist(),
            guidance_scale=p.distilled_cfg_scale,
            height=SIZE,
            width=SIZE,
            latents=packed,
        ).images[0]


def test_the_folders_load_as_flux_dev_and_schnell(dev, schnell):
    assert dev.family == schnell.family == "flux" and dev.prediction_type == "flow"
    assert dev.takes_guidance and not schnell.takes_guidance
    assert dev.flow_dynamic == (0.5, 1.15, 256, 4096) and schnell.flow_dynamic is None
    assert float(dev.model_sigmas().model_timestep(torch.tensor(0.5))) == 0.5  # Flux scales σ itself
    assert dev.native_size == 1024


@pytest.mark.parametrize(("width", "height"), [(64, 64), (1024, 1024), (1344, 768)])
def test_the_dev_shift_is_the_one_diffusers_computes_for_the_size(dev, width, height):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    tokens = (height // 16) * (width // 16)
    mu = calculate_shift(tokens, 256, 4096, 0.5, 1.15)
    assert dev.flow_shift_at((width, height)) == pytest.approx(math.exp(mu), rel=1e-12)


@pytest.mark.parametrize("which", ["dev", "schnell"])
def test_txt2img_matches_diffusers_flux_pipeline(dev, schnell, which):
    model = dev if which == "dev" else schnell
    p = flux(steps=4, distilled_cfg_scale=3.5)
    ours = txt2img(model, p)
    diff = np.abs(pixels(ours.images[0]) - pixels(theirs(model, p)))
    assert diff.max() <= 2, diff.max()
    assert pixels(ours.images[0]).std() > 5
    written = "Distilled CFG Scale: 3.5" in ours.infotexts[0]
    assert written == (which == "dev")  # Forge writes it for the models that take it


def test_the_distilled_cfg_scale_steers_dev_and_round_trips_through_the_infotext(dev):
    from engine.schema.infotext import params_from_infotext

    low = txt2img(dev, flux(steps=3, distilled_cfg_scale=1.5))
    high = pixels(txt2img(dev, flux(steps=3, distilled_cfg_scale=6.0)).images[0])
    assert np.abs(pixels(low.images[0]) - high).mean() > 0.5
    assert "Distilled CFG Scale: 1.5" in low.infotexts[0]
    assert params_from_infotext(low.infotexts[0])[0].distilled_cfg_scale == 1.5


def test_img2img_matches_diffusers_flux_img2img(dev):
    src = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    p = Img2ImgParams(**{**flux(steps=6).model_dump(), "denoising_strength": 0.6})
    tail = stages.strength_tail(dev, p, p.denoising_strength)
    latents = encode(dev, to_tensor([src], dev.device))
    with torch.inference_mode():
        reference = diffusers_flux_img2img_pipeline(
            dev
        )(
            p.prompt,
            image=latents,  # 16 channels: taken as latents (the posterior's mean, as we encode)
            strength=1.0,  # the whole of the σ's handed over: our tail
            sigmas=tail[:-1].tolist(),
            num_inference_steps=len(tail) - 1,
            guidance_scale=p.distilled_cfg_scale,
            height=SIZE,
            width=SIZE,
            generator=torch.Generator().manual_seed(p.seed),
        ).images[0]
    ours = i2i.img2img(dev, p, i2i.Img2ImgInputs([src])).images[0]
    assert np.abs(pixels(ours) - pixels(reference)).max() <= 2


def test_real_cfg_above_1_uses_the_negative_prompt(dev):
    one = pixels(txt2img(dev, flux(steps=3)).images[0])
    guided = pixels(txt2img(dev, flux(steps=3).model_copy(update={"cfg_scale": 3.0})).images[0])
    assert np.abs(one - guided).mean() > 0.5


def test_a_size_that_is_not_a_multiple_of_16_is_refused_clearly(dev):
    with pytest.raises(ValueError, match="multiples of 16 px"):
        txt2img(dev, flux(steps=2, width=72, height=64))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_on_flux(dev, name, monkeypatch):
    calls = count_network_calls(dev, monkeypatch)
    p = flux(sampler_name=name, steps=4)
    assert pixels(txt2img(dev, p).images[0]).std() > 1
    expected = expected_unet_calls(name, stages.make_sigmas(dev, p))
    if expected is not None and name != "Restart":
        assert len(calls) == expected


@pytest.mark.parametrize(
    ("dtype", "max_diff", "mean_diff"), [(torch.float8_e4m3fn, 12, 1.0), (torch.float8_e5m2, 20, 2.0)]
)
def test_fp8_stored_weights_load_and_compute_in_the_working_precision(tmp_path, dtype, max_diff, mean_diff):
    """A transformer stored in float8 (as fp8 downloads are) loads, runs in the working precision
    (fp32 here) and draws the fp16-stored picture within fp8's rounding: measured on these tiny
    random weights, e4m3fn 8 and e5m2 13 at most of 255, 0.7 and 1.5 on average."""
    from safetensors.torch import load_file, save_file

    pictures = {}
    for name, stored in (("fp16", torch.float16), ("fp8", dtype)):
        folder = write_tiny_flux(tmp_path / name)
        for file in (folder / "transformer").glob("*.safetensors"):
            state = load_file(file)
            save_file({k: v.to(stored) if v.is_floating_point() else v for k, v in state.items()}, file)
        model = load_tiny(folder)
        assert all(p.dtype == torch.float32 for p in model.unet.parameters())
        pictures[name] = pixels(txt2img(model, flux(steps=4)).images[0])
    diff = np.abs(pictures["fp8"] - pictures["fp16"])
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (diff.max(), diff.mean())


def test_choosing_flux_proposes_cfg_1_and_schnell_4_steps(checkpoints, dev):
    from engine.models.manager import ModelManager

    manager = ModelManager(root=checkpoints, extra_dirs=[checkpoints], device="cpu")
    assert manager.proposal_of("tiny-flux-dev") == {"cfg_scale": 1.0}  # read from its config
    assert manager.proposal_of("tiny-flux-schnell") == {"cfg_scale": 1.0, "steps": 4}
    assert manager.current is None  # nothing was loaded to know it
