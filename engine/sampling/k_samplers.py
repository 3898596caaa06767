"""Samplers that integrate the probability-flow ODE dx/dσ = (x − D(x, σ)) / σ directly in σ
(Karras et al. 2022, "Elucidating the Design Space..."; the algorithms k-diffusion publishes):
Euler, Euler ancestral, Heun, DPM2, DPM2 ancestral, LMS and Restart.

A step to σ = 0 is an Euler step, which lands exactly on x̂₀ = D(x, σ): a second model call at σ = 0
would be meaningless (the network was never trained there). LMS is the exception: its multistep
polynomial integrates down to 0 like any other step.

`s_noise` scales the fresh noise only where A1111 passes it (churn, DPM2 a); Euler a and Restart
draw unscaled noise, as in A1111.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.sampling.base import (
    VE,
    NoiseSpace,
    SamplerOptions,
    churn,
    report,
    sigma_like,
    to_d,
)
from engine.sampling.schedules import karras_sigmas


def _options(options: SamplerOptions | None) -> SamplerOptions:
    return options or SamplerOptions()


def ancestral_euler_loop(denoise, x, sigmas, noise, callback, eta: float, space: NoiseSpace = VE):
    """Euler to σ_down, then fresh noise of std σ_up (Euler a, and DDIM in `timestep_samplers`)."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = space.ancestral_step(s[i], s[i + 1], eta)
        x = x + to_d(x, s[i], denoised) * (sigma_down - s[i])
        if sigma_up > 0:
            x = space.renoise(x, noise(x), sigma_down, s[i + 1], sigma_up)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_euler(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 with S_churn)."""
    opts = _options(options)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        x, sigma_hat = churn(x, s[i], len(s) - 1, noise, opts, space)
        denoised = denoise(x, sigmas[i] if sigma_hat == s[i] else sigma_like(sigmas, sigma_hat))
        x = x + to_d(x, sigma_hat, denoised) * (s[i + 1] - sigma_hat)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_euler_ancestral(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """Euler with ancestral noise: each step goes to σ_down deterministically, then adds σ_up noise."""
    opts = _options(options)
    return ancestral_euler_loop(denoise, x, sigmas, noise, callback, opts.eta_ancestral, space)


def sample_heun(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """Heun's second-order method (Karras et al. 2022, Algorithm 2): an Euler predictor, then the
    average of the slopes at both ends. Two model calls per step, one on the final step to σ = 0."""
    opts = _options(options)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        x, sigma_hat = churn(x, s[i], len(s) - 1, noise, opts, space)
        denoised = denoise(x, sigmas[i] if sigma_hat == s[i] else sigma_like(sigmas, sigma_hat))
        d = to_d(x, sigma_hat, denoised)
        dt = s[i + 1] - sigma_hat
        if s[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, s[i + 1], denoise(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_dpm_2(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DPM-Solver-2 in σ (k-diffusion's "DPM2"): the slope is taken at the log-midpoint σ_mid =
    sqrt(σ·σ_next), reached by an Euler half step — second order like Heun, but the second call
    lands on a σ the schedule does not already visit."""
    opts = _options(options)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        x, sigma_hat = churn(x, s[i], len(s) - 1, noise, opts, space)
        denoised = denoise(x, sigmas[i] if sigma_hat == s[i] else sigma_like(sigmas, sigma_hat))
        d = to_d(x, sigma_hat, denoised)
        if s[i + 1] == 0:
            x = x + d * (s[i + 1] - sigma_hat)
        else:
            sigma_mid = math.exp((math.log(sigma_hat) + math.log(s[i + 1])) / 2)
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, denoise(x_2, sigma_like(sigmas, sigma_mid)))
            x = x + d_2 * (s[i + 1] - sigma_hat)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_dpm_2_ancestral(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DPM2 to σ_down, then σ_up of fresh noise (the ancestral split of `NoiseSpace.ancestral_step`)."""
    opts = _options(options)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = space.ancestral_step(s[i], s[i + 1], opts.eta_ancestral)
        d = to_d(x, s[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - s[i])
        else:
            sigma_mid = math.exp((math.log(s[i]) + math.log(sigma_down)) / 2)
            x_2 = x + d * (sigma_mid - s[i])
            d_2 = to_d(x_2, sigma_mid, denoise(x_2, sigma_like(sigmas, sigma_mid)))
            x = x + d_2 * (sigma_down - s[i])
        if sigma_up > 0:
            x = space.renoise(x, noise(x) * opts.s_noise, sigma_down, s[i + 1], sigma_up)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


# Gauss–Legendre nodes/weights on [-1, 1]: 4 points integrate polynomials up to degree 7 exactly,
# and the LMS integrands are Lagrange polynomials of degree <= 3.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(4)


def lms_coefficients(s: list[float], i: int, order: int) -> list[float]:
    """Adams–Bashforth weights for a non-uniform σ grid: the integral over [σ_i, σ_{i+1}] of each
    Lagrange basis polynomial through σ_i, σ_{i-1}, …, σ_{i-order+1} (weight j goes with the slope at
    σ_{i-j})."""
    nodes = [s[i - k] for k in range(order)]
    a, b = s[i], s[i + 1]
    taus = (b - a) / 2 * _GL_NODES + (a + b) / 2
    coeffs = []
    for j in range(order):
        basis = np.ones_like(taus)
        for k in range(order):
            if k != j:
                basis *= (taus - nodes[k]) / (nodes[j] - nodes[k])
        coeffs.append(float((b - a) / 2 * np.dot(_GL_WEIGHTS, basis)))
    return coeffs


def sample_lms(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE, order: int = 4):
    """Linear multistep (k-diffusion's "LMS"): a 4th-order Adams–Bashforth method in σ whose weights
    are recomputed for the actual, uneven σ spacing. It also integrates the last step to σ = 0 with
    the polynomial, so it ends on the ODE solution rather than on x̂₀."""
    s = sigmas.tolist()
    slopes: list[torch.Tensor] = []
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        slopes.append(to_d(x, s[i], denoised))
        if len(slopes) > order:
            slopes.pop(0)
        coeffs = lms_coefficients(s, i, min(i + 1, order))
        x = x + sum(c * d for c, d in zip(coeffs, reversed(slopes), strict=False))
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def restart_plan(s: list[float], space: NoiseSpace = VE) -> list[tuple[float, float]]:
    """The (σ, σ_next) steps of Restart sampling (Xu et al. 2023) as A1111 configures it: with 20 or
    more steps, K restart segments (9 steps, once; from 36 steps, steps/4 twice) jump from σ ≈ 0.1 back
    to σ ≈ 2 (for a flow model the σ's of the same noise-to-signal ratios), and the main path is a
    Karras schedule of the remaining steps between the given schedule's end points. Fewer than 20
    steps: the schedule as given (plain Heun)."""
    steps = len(s) - 1
    if steps < 20:
        return list(zip(s[:-1], s[1:], strict=True))
    restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
    main = karras_sigmas(steps - restart_steps * restart_times, s[-2], s[0]).tolist()

    def nearest(value: float) -> int:
        return min(range(len(main)), key=lambda k: abs(main[k] - value))

    low, high = nearest(space.from_ve(0.1)), nearest(space.from_ve(2.0))
    plan: list[tuple[float, float]] = []
    for i in range(len(main) - 1):
        plan.append((main[i], main[i + 1]))
        if i + 1 == low and high < low:
            segment = karras_sigmas(restart_steps + 1, main[low], main[high]).tolist()[:-1]
            for _ in range(restart_times):
                plan.extend(zip(segment[:-1], segment[1:], strict=True))
    return plan


def sample_restart(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """Restart sampling (Xu et al. 2023): Heun steps along the ODE, and at the restart point fresh
    noise lifts x back from σ_low to σ_high (VE: variance σ_high² − σ_low²) to run that stretch
    again — the noise contracts accumulated errors while the ODE steps keep the error per step low."""
    plan = restart_plan(sigmas.tolist(), space)
    last_sigma = None
    for step, (sigma, sigma_next) in enumerate(plan):
        if last_sigma is not None and last_sigma < sigma:
            x = space.lift(x, noise(x), last_sigma, sigma)
        denoised = denoise(x, sigma_like(sigmas, sigma))
        d = to_d(x, sigma, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma)
        else:
            x_2 = x + d * (sigma_next - sigma)
            d_2 = to_d(x_2, sigma_next, denoise(x_2, sigma_like(sigmas, sigma_next)))
            x = x + (d + d_2) / 2 * (sigma_next - sigma)
        last_sigma = sigma_next
        report(callback, step, len(plan), x, denoised, sigma)
    return x
