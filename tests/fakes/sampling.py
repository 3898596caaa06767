"""Stand-ins the sampling tests share: SD's σ table without a model, seeded noise, a recorder of
UNet calls and VAE inputs, the UNet-call count each sampler should make, and an exact quadrature
for diffusers' LMS (scipy is not installed here)."""

from __future__ import annotations

import numpy as np
import torch

from engine.sampling.schedules import ModelSigmas


def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


MODEL = ModelSigmas.from_alphas_cumprod(sd_alphas_cumprod())


def gaussian_noise(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype)


TWO_CALLS_PER_STEP = {"Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "Restart"}


class Recorder:
    """Counts UNet calls and keeps the latents handed to the VAE."""

    def __init__(self, model, monkeypatch):
        self.calls, self.latents = 0, []
        unet, decode = model.unet, model.vae.decode

        def counting_unet(*args, **kwargs):
            self.calls += 1
            return unet(*args, **kwargs)

        def recording_decode(z, *args, **kwargs):
            self.latents.append(z.clone())
            return decode(z, *args, **kwargs)

        monkeypatch.setattr(model, "unet", counting_unet)
        monkeypatch.setattr(model.vae, "decode", recording_decode)


def expected_unet_calls(sampler: str, sigmas: torch.Tensor) -> int | None:
    """One batched (cond + uncond) UNet call per model evaluation; a step to σ = 0 costs one call."""
    s = sigmas.tolist()
    n = len(s) - 1
    if sampler == "DPM adaptive":
        return None  # as many as its error control needs
    if sampler in TWO_CALLS_PER_STEP:
        return 2 * n - (1 if s[-1] == 0 else 0)
    if sampler == "PLMS":
        return n + (1 if s[1] > 0 else 0)  # the first step's extra call, unless it goes to σ = 0
    return n


class ExactQuad:
    """Stands in for scipy.integrate (not installed here) inside diffusers' LMS: Gauss–Legendre with
    8 nodes is exact for the degree ≤ 3 Lagrange polynomials diffusers integrates."""

    nodes, weights = np.polynomial.legendre.leggauss(8)

    @classmethod
    def quad(cls, f, a, b, epsrel=None):
        a, b = float(a), float(b)
        taus = (b - a) / 2 * cls.nodes + (a + b) / 2
        return (b - a) / 2 * sum(float(w) * f(float(t)) for w, t in zip(cls.weights, taus, strict=True)), 0.0


def count_network_calls(model, monkeypatch) -> list[int]:
    """A list that grows by one at each call of `model`'s denoising network (whose config stays
    readable, as the pipeline reads it)."""
    calls: list[int] = []
    network = model.unet

    def counting(*args, **kwargs):
        calls.append(1)
        return network(*args, **kwargs)

    monkeypatch.setattr(model, "unet", counting)
    monkeypatch.setattr(counting, "config", network.config, raising=False)
    return calls
