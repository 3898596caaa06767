"""The samplers A1111 runs on model timesteps rather than k-diffusion σ's — DDIM, DDIM CFG++, PLMS —
and LCM, rewritten in σ-space.

In the VE variable x = x_VP / sqrt(ᾱ) the DDIM update x_prev = sqrt(ᾱ_prev)·x̂₀ + sqrt(1 − ᾱ_prev)·ε
becomes x_next = x̂₀ + σ_next·ε, i.e. an Euler step in σ with slope ε = (x − x̂₀)/σ. So a method that
transfers an ε estimate with DDIM (PLMS, CFG++) is "x + (σ_next − σ)·ε" here, on any σ schedule.
"""

from __future__ import annotations

import torch

from engine.sampling.base import VE, SamplerOptions, report
from engine.sampling.k_samplers import ancestral_euler_loop

# A1111 maps the CFG scale onto CFG++'s λ ∈ [0, 1] by dividing by 12.5 (CFG 12.5 = λ 1).
CFGPP_SCALE_DIVISOR = 12.5


def sample_ddim(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DDIM (Song et al. 2020). In σ-space its update is the Euler step; its η noise has the same
    variance as an ancestral step with that η, so DDIM = Euler ancestral with η_DDIM (default 0)."""
    opts = options or SamplerOptions()
    return ancestral_euler_loop(denoise, x, sigmas, noise, callback, opts.eta_ddim, space)


def sample_ddim_cfgpp(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DDIM with CFG++ (Chung et al. 2024): x̂₀ from guidance at λ = CFG/12.5, but the step back
    up to σ_next re-noises along the *unconditional* ε, which keeps samples on the data manifold at
    low guidance. Needs a guider that exposes the unconditional prediction (`CFGGuider.with_uncond`);
    for a plain denoiser the two coincide and this is DDIM."""
    opts = options or SamplerOptions()
    with_uncond = getattr(denoise, "with_uncond", None)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        if with_uncond is not None:
            denoised, uncond = with_uncond(x, sigmas[i], scale_multiplier=1 / CFGPP_SCALE_DIVISOR)
        else:
            denoised = uncond = denoise(x, sigmas[i])
        sigma_down, sigma_up = space.ancestral_step(s[i], s[i + 1], opts.eta_ddim)
        # x_down = α_down·x̂₀ + σ_down·ε̂, with ε̂ = (x − α·x̂₀_uncond)/σ: the unconditional noise
        x = space.alpha(sigma_down) * denoised + (x - space.alpha(s[i]) * uncond) / s[i] * sigma_down
        if sigma_up > 0:
            x = space.renoise(x, noise(x), sigma_down, s[i + 1], sigma_up)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


# Adams–Bashforth weights for equal steps, newest first (PLMS, Liu et al. 2022).
_ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def sample_plms(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """PLMS / PNDM (Liu et al. 2022): Adams–Bashforth on ε with the DDIM transfer, assuming equal
    steps (as the original on DDIM timesteps). The first step has no history, so it is a pseudo
    improved-Euler step with one extra model call at σ_1; only ε at the step's own σ is kept.
    A final step to σ = 0 returns x̂₀ like every other sampler here."""
    s = sigmas.tolist()
    history: list[torch.Tensor] = []  # ε at previous steps, oldest first
    for i in range(len(s) - 1):
        eps = (x - denoise(x, sigmas[i])) / s[i]
        if s[i + 1] == 0:
            # The step to σ = 0 lands on x̂₀: Adams–Bashforth weights assume equal steps, and this
            # one is far longer than the last, so extrapolating ε over it would cost an O(h) error.
            eps_prime = eps
        elif not history:
            x_pred = x + (s[i + 1] - s[i]) * eps
            eps_next = (x_pred - denoise(x_pred, sigmas[i + 1])) / s[i + 1]
            eps_prime = (eps + eps_next) / 2
        else:
            recent = [eps, *reversed(history[-3:])]
            weights = _ADAMS_BASHFORTH[len(recent)]
            eps_prime = sum(w * e for w, e in zip(weights, recent, strict=True))
        denoised = x - s[i] * eps_prime
        x = x + (s[i + 1] - s[i]) * eps_prime
        history.append(eps)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_lcm(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """Latent Consistency Model sampling (Luo et al. 2023): jump to the model's x̂₀, then re-noise
    to the next σ with fresh noise — a consistency model's multistep sampling, no ODE solving."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        x = denoised
        if s[i + 1] > 0:
            x = space.noised(x, noise(x), s[i + 1])
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x
