"""σ-space samplers: pure functions of (denoise, x, sigmas) (DESIGN.md, examples 1 and 2).

`denoise(x, σ) → x̂₀` is the model already wrapped to σ-space with guidance applied (see
`denoiser.py`), so no sampler knows about ε/v prediction or CFG. Loop state lives in locals.
Written by hand because diffusers' schedulers are stateful objects keyed by timestep, while A1111's
samplers and schedule types are defined over σ (k-diffusion's formulation).

Every sampler has the signature
    fn(denoise, x, sigmas, *, noise, callback, options) -> x
where `noise(x)` draws fresh N(0, 1) noise shaped like x from per-image seeded generators and
`callback(StepInfo)` is called after each step (it may raise to interrupt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.sampling.registry import register_sampler

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerOptions:
    eta_ancestral: float = 1.0  # A1111 "Eta" for ancestral/SDE samplers
    eta_ddim: float = 0.0  # A1111 "Eta DDIM"
    s_noise: float = 1.0  # "sigma noise": scales the fresh noise of ancestral steps


@dataclass(frozen=True)
class StepInfo:
    step: int  # 0-based index of the step just finished
    total: int
    x: torch.Tensor
    denoised: torch.Tensor
    sigma: float


StepCallback = Callable[[StepInfo], None]


def _report(callback: StepCallback | None, i: int, sigmas: torch.Tensor, x, denoised) -> None:
    if callback is not None:
        callback(StepInfo(i, len(sigmas) - 1, x, denoised, float(sigmas[i])))


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float):
    """Split a step to σ_next into a deterministic part to σ_down plus fresh noise of std σ_up."""
    if not eta or float(sigma_next) == 0.0:
        return sigma_next, sigma_next.new_zeros(())
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt())
    sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
    return sigma_down, sigma_up


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's derivative dx/dσ = (x − x̂₀) / σ."""
    return (x - denoised) / sigma


def _euler_ancestral(denoise, x, sigmas, noise, callback, eta: float, s_noise: float):
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if float(sigma_up) > 0:
            x = x + noise(x) * s_noise * sigma_up
        _report(callback, i, sigmas, x, denoised)
    return x


@register_sampler("Euler", default_schedule="Uniform")
def sample_euler(denoise: Denoise, x, sigmas, *, noise: NoiseFn, callback=None, options=None):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn)."""
    return _euler_ancestral(denoise, x, sigmas, noise, callback, eta=0.0, s_noise=1.0)


@register_sampler("Euler a", aliases=("euler_ancestral", "k_euler_a"), uses_noise=True)
def sample_euler_ancestral(denoise: Denoise, x, sigmas, *, noise: NoiseFn, callback=None, options=None):
    """Euler with ancestral noise: each step goes to σ_down deterministically, then adds σ_up noise."""
    opts = options or SamplerOptions()
    return _euler_ancestral(denoise, x, sigmas, noise, callback, opts.eta_ancestral, opts.s_noise)


@register_sampler("DDIM", aliases=("ddim",), default_schedule="DDIM")
def sample_ddim(denoise: Denoise, x, sigmas, *, noise: NoiseFn, callback=None, options=None):
    """DDIM (Song et al. 2020). In σ-space its update is the Euler step; its η noise has the same
    variance as an ancestral step with that η, so DDIM = Euler ancestral with η_DDIM (default 0)."""
    opts = options or SamplerOptions()
    return _euler_ancestral(denoise, x, sigmas, noise, callback, opts.eta_ddim, opts.s_noise)


@register_sampler("DPM++ 2M", aliases=("dpmpp_2m", "k_dpmpp_2m"), default_schedule="Karras")
def sample_dpmpp_2m(denoise: Denoise, x, sigmas, *, noise: NoiseFn, callback=None, options=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in t = −log σ: a second-order multistep
    method that reuses the previous step's x̂₀ instead of a second model call."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if float(sigma_next) == 0.0:
            x = denoised
        else:
            h = sigma.log() - sigma_next.log()
            if old_denoised is None:
                denoised_d = denoised
            else:
                h_last = sigmas[i - 1].log() - sigma.log()
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - torch.expm1(-h) * denoised_d
        old_denoised = denoised
        _report(callback, i, sigmas, x, denoised)
    return x
