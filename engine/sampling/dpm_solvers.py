"""DPM-Solver family (Lu et al. 2022, "DPM-Solver" and "DPM-Solver++"), written in σ-space.

All of them work in t = −log σ (the half log-SNR λ of the VP process, since σ_VE = σ_VP / α): there
the linear part of the ODE is solved exactly and only the x̂₀ (or ε) term is approximated, so large
steps stay stable. With h = t_next − t the exact linear part is x · σ_next/σ = x · e^{−h}.

"++" samplers extrapolate x̂₀ (data prediction); "DPM fast/adaptive" extrapolate ε = (x − x̂₀)/σ.
SDE variants add noise σ_next·sqrt(1 − e^{−2ηh}) and damp the x̂₀ term to keep the marginals right.

DPM++ 2M is a solver of the ODE dx/dσ = (x − x̂₀)/σ alone and serves flow models unchanged (see
`NoiseSpace`). The samplers that add noise are written in their general form, with λ = log(α/σ) and
the x̂₀ terms scaled by α_next: x_next = (σ_next/σ)·e^{−ηh}·x + α_next·(1 − e^{−(1+η)h})·x̂₀ + noise.
For α = 1 (VE) that is the formula above, computed exactly as before; from a flow model's pure
noise (σ = 1) λ is −∞ and h infinite, which the formulas take as their limits.
"""

from __future__ import annotations

import math

from engine.sampling.base import (
    VE,
    NoiseSpace,
    SamplerOptions,
    brownian_sampler,
    report,
    sigma_like,
    to_d,
)


def _options(options: SamplerOptions | None) -> SamplerOptions:
    return options or SamplerOptions()


def sample_dpmpp_2m(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second order by reusing the previous step's
    x̂₀ in a linear extrapolation instead of a second model call."""
    s = sigmas.tolist()
    old_denoised = None
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            if old_denoised is None:
                denoised_d = denoised
            else:
                r = (math.log(s[i - 1]) - math.log(s[i])) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s[i + 1] / s[i]) * x - math.expm1(-h) * denoised_d
        old_denoised = denoised
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def _exp_step(space: NoiseSpace, x, denoised, sigma: float, sigma_to: float):
    """DPM-Solver++'s first-order step from σ to σ_to with x̂₀ held: (σ_to/σ)·x + α_to·(1 − e^{−h})·x̂₀,
    h = λ_to − λ (the exact solution of the ODE's linear part)."""
    h = space.half_log_snr(sigma_to) - space.half_log_snr(sigma)
    return (sigma_to / sigma) * x - space.alpha(sigma_to) * math.expm1(-h) * denoised


def _eta_h(eta: float, h: float) -> float:
    """η·h, which is 0 for η = 0 even where h is infinite (a step from pure noise)."""
    return eta * h if eta else 0.0


def sample_dpmpp_2s_ancestral(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DPM-Solver++(2S) with ancestral noise: a single-step second-order solver whose extra call sits at
    the λ-midpoint of σ and σ_down; then σ_up of fresh noise (η = "Eta", default 1)."""
    opts = _options(options)
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = space.ancestral_step(s[i], s[i + 1], opts.eta_ancestral)
        if sigma_down == 0:
            x = x + to_d(x, s[i], denoised) * (sigma_down - s[i])
        else:
            sigma_mid = space.between(s[i], sigma_down, 0.5)
            x_2 = _exp_step(space, x, denoised, s[i], sigma_mid)
            denoised_2 = denoise(x_2, sigma_like(sigmas, sigma_mid))
            x = _exp_step(space, x, denoised_2, s[i], sigma_down)
        if sigma_up > 0:
            x = space.renoise(x, noise(x) * opts.s_noise, sigma_down, s[i + 1], sigma_up)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_dpmpp_sde(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE, r: float = 0.5):
    """DPM-Solver++ (stochastic, single-step, second order): a noisy first-order step to the
    midpoint σ_s, a second model call there, then the step to σ_next from the start using that x̂₀.
    Both noise draws come from one Brownian path, so the two overlapping increments are correlated
    as the SDE requires (and do not depend on the batch)."""
    opts = _options(options)
    eta = opts.eta_ancestral
    s = sigmas.tolist()
    brownian = brownian_sampler(noise, x)
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        if s[i + 1] == 0:
            x = x + to_d(x, s[i], denoised) * (s[i + 1] - s[i])
        else:
            sigma_s = space.between(s[i], s[i + 1], r)
            # Step 1: to σ_s (its deterministic part to σ_down, then σ_up of Brownian noise).
            sd, su = space.ancestral_step(s[i], sigma_s, eta)
            x_2 = _exp_step(space, x, denoised, s[i], sd)
            if su > 0:
                x_2 = space.renoise(x_2, brownian(s[i], sigma_s) * opts.s_noise, sd, sigma_s, su)
            denoised_2 = denoise(x_2, sigma_like(sigmas, sigma_s))
            # Step 2: to σ_next with the x̂₀ blend that makes the step second order.
            sd, su = space.ancestral_step(s[i], s[i + 1], eta)
            fac = 1 / (2 * r)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = _exp_step(space, x, denoised_d, s[i], sd)
            if su > 0:
                x = space.renoise(x, brownian(s[i], s[i + 1]) * opts.s_noise, sd, s[i + 1], su)
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def _dpmpp_2m_sde(denoise, x, sigmas, noise, callback, options, solver: str, space: NoiseSpace):
    """DPM-Solver++(2M) SDE: the exact solution of the linear part of the data-prediction SDE with
    the x̂₀ term extrapolated from the last two steps; "midpoint" and "heun" are the two ways
    DPM-Solver++ weights the first difference (both second order)."""
    opts = _options(options)
    eta = opts.eta_ancestral
    s = sigmas.tolist()
    brownian = brownian_sampler(noise, x)
    old_denoised, h_last = None, None
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        h = None
        if s[i + 1] == 0:
            x = denoised
        else:
            h = space.half_log_snr(s[i + 1]) - space.half_log_snr(s[i])
            eta_h = _eta_h(eta, h)
            alpha = space.alpha(s[i + 1])
            weight = -math.expm1(-h - eta_h)  # 1 − e^{−(1+η)h}: how far x moves towards x̂₀
            x = (s[i + 1] / s[i]) * math.exp(-eta_h) * x + (alpha * weight) * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver == "heun":
                    x = x + alpha * (weight / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + alpha * 0.5 * weight * (1 / r) * (denoised - old_denoised)
            if eta:
                x = (
                    x
                    + brownian(s[i], s[i + 1]) * s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * opts.s_noise
                )
        old_denoised, h_last = denoised, h
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x


def sample_dpmpp_2m_sde(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    return _dpmpp_2m_sde(denoise, x, sigmas, noise, callback, options, "midpoint", space)


def sample_dpmpp_2m_sde_heun(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    return _dpmpp_2m_sde(denoise, x, sigmas, noise, callback, options, "heun", space)


def sample_dpmpp_3m_sde(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DPM-Solver++(3M) SDE: as 2M SDE, with a second difference of the last three x̂₀ weighted by the
    φ₂ / φ₃ functions of (1+η)h, third order on the ODE (η = 0)."""
    opts = _options(options)
    eta = opts.eta_ancestral
    s = sigmas.tolist()
    brownian = brownian_sampler(noise, x)
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(len(s) - 1):
        denoised = denoise(x, sigmas[i])
        h = None
        if s[i + 1] == 0:
            x = denoised
        else:
            h = space.half_log_snr(s[i + 1]) - space.half_log_snr(s[i])
            h_eta = h * (eta + 1)
            alpha = space.alpha(s[i + 1])
            x = (s[i + 1] / s[i]) * math.exp(-_eta_h(eta, h)) * x - (alpha * math.expm1(-h_eta)) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha * phi_2) * d1 - (alpha * phi_3) * d2
            elif h_1 is not None:
                x = x + (alpha * phi_2) * (denoised - denoised_1) / (h_1 / h)
            if eta:
                x = (
                    x
                    + brownian(s[i], s[i + 1])
                    * s[i + 1]
                    * math.sqrt(-math.expm1(-2 * h * eta))
                    * opts.s_noise
                )
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        report(callback, i, len(s) - 1, x, denoised, s[i])
    return x
