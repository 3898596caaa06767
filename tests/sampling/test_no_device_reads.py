"""No sampler reads a value back from the device while it samples (each read stalls a GPU until its
queue drains, at every step): σ's stay on the CPU, timesteps are made on the device once per σ,
ControlNet reads its step range off the CPU timestep. Run on the `meta` device, where any read of a
value (`.item()`, `float()`, `.tolist()`, a device → CPU copy) raises, and so does mixing devices
in an op, this needs no GPU. DPM adaptive is the one exception: its step size is an error norm it
must read (as in k-diffusion and A1111)."""

from __future__ import annotations

import pytest
import torch

from engine.conditioning.text_cond import TextCond
from engine.pipeline.rng import ImageRNG
from engine.sampling.denoiser import CFGGuider, SigmaDenoiser
from engine.sampling.registry import SAMPLERS, build_sigmas
from engine.sampling.samplers import SamplerOptions
from tests.fakes.sampling import MODEL

META = torch.device("meta")
READS_ITS_ERROR = {"DPM adaptive"}


def meta_unet(x: torch.Tensor, t: torch.Tensor, cond: TextCond, **extra) -> torch.Tensor:
    assert x.device == t.device == cond.hidden.device == META
    if "t_value" in extra:
        assert isinstance(extra["t_value"], float)  # ControlNet's step range, as a number
    return torch.zeros_like(x)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - READS_ITS_ERROR))
def test_sampling_never_reads_the_device(name):
    sigmas = build_sigmas(name, "Automatic", 6, MODEL, SamplerOptions())
    assert sigmas.device.type == "cpu"
    denoiser = SigmaDenoiser(meta_unet, MODEL, "epsilon", wants_uncond_count=True)
    cond, uncond = torch.zeros(1, 77, 8, device=META), torch.zeros(1, 77, 8, device=META)
    guider = CFGGuider.plain(denoiser, cond, uncond, 7.0, sigmas=sigmas)
    x = torch.zeros(1, 4, 8, 8, device=META)
    noise = ImageRNG([1], (4, 8, 8), META)  # one image's latent shape
    out = SAMPLERS[name].fn(guider, x, sigmas, noise=noise, callback=None, options=SamplerOptions())
    assert out.device == META and out.shape == x.shape


def test_a_device_read_is_caught_here():
    """The premise: on `meta`, reading a value raises."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        float(torch.zeros((), device=META))


def test_the_pipeline_samples_without_reading_the_device(tiny_diffusers_dir):
    """The same through `stages.denoise` with the tiny model's UNet on `meta`: the pipeline hands the
    samplers CPU σ's and feeds the UNet device timesteps."""
    import copy
    import dataclasses

    from engine.conditioning.schedule import Conditioning
    from engine.pipeline import stages
    from engine.schema.params import GenerationParams
    from engine.service.jobs import Job
    from tests.fakes.tiny_models import load_tiny

    model = load_tiny(tiny_diffusers_dir)
    unet = torch.nn.Module.to(copy.deepcopy(model.unet), META)
    on_meta = dataclasses.replace(model, unet=unet, device=META)
    sigmas = build_sigmas("Euler a", "Automatic", 4, MODEL, SamplerOptions())
    hidden = torch.zeros(1, 77, model.text_encoder.config.hidden_size, device=META)
    conditioning = Conditioning.constant(TextCond.of(hidden), TextCond.of(hidden))
    x = torch.zeros(1, 4, 8, 8, device=META)
    rng = ImageRNG([1], (4, 8, 8), META)
    params = GenerationParams(prompt="", steps=4, sampler_name="Euler a", width=64, height=64)
    out = stages.denoise(on_meta, params, x, sigmas, conditioning, rng, Job())
    assert out.device == META
