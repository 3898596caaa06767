"""DPM-Solver with ε extrapolation (Lu et al. 2022, "DPM-Solver", Algorithms 1–2 and §4 / App. C):
"DPM fast" (a fixed budget of model calls split into 3rd/2nd/1st-order single steps, uniform in
t = −log σ) and "DPM adaptive" (embedded 2nd/3rd-order pairs with a PID step-size controller).

Both integrate from the schedule's first σ to its smallest positive σ and return x there, without a
final step to σ = 0 (as k-diffusion and A1111 do): the schedule only supplies the two end points.
With η > 0 (A1111 passes its ancestral "Eta", default 1) every step is ancestral.
"""

from __future__ import annotations

import math

import torch

from engine.sampling.base import VE, NoiseSpace, SamplerOptions, report

MAX_ADAPTIVE_ATTEMPTS = 10_000  # a safety net: a model returning garbage must not loop forever


def _sigma(t: float) -> float:
    return math.exp(-t)


def _eps_fn(denoise, sigmas: torch.Tensor):
    def eps(x: torch.Tensor, t: float) -> torch.Tensor:
        sigma = _sigma(t)
        return (x - denoise(x, sigmas.new_tensor(sigma))) / sigma

    return eps


def _step_1(x, t, t_next, eps0):
    """DPM-Solver-1 (= DDIM): exact linear part, ε held constant over the step."""
    return x - _sigma(t_next) * math.expm1(t_next - t) * eps0


def _step_2(x, t, t_next, eps0, eps, r1: float = 0.5):
    """DPM-Solver-2: one extra ε at t + r1·h corrects the first-order term. Returns (x, ε at r1)."""
    h = t_next - t
    s1 = t + r1 * h
    u1 = x - _sigma(s1) * math.expm1(r1 * h) * eps0
    eps_r1 = eps(u1, s1)
    x_next = (
        x
        - _sigma(t_next) * math.expm1(h) * eps0
        - _sigma(t_next) / (2 * r1) * math.expm1(h) * (eps_r1 - eps0)
    )
    return x_next, eps_r1


def _step_3(x, t, t_next, eps0, eps, eps_r1=None, r1: float = 1 / 3, r2: float = 2 / 3):
    """DPM-Solver-3: ε at t + h/3 and t + 2h/3; the second difference gives third order."""
    h = t_next - t
    s1, s2 = t + r1 * h, t + r2 * h
    if eps_r1 is None:
        eps_r1 = eps(x - _sigma(s1) * math.expm1(r1 * h) * eps0, s1)
    u2 = (
        x
        - _sigma(s2) * math.expm1(r2 * h) * eps0
        - _sigma(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps_r1 - eps0)
    )
    eps_r2 = eps(u2, s2)
    return (
        x
        - _sigma(t_next) * math.expm1(h) * eps0
        - _sigma(t_next) / r2 * (math.expm1(h) / h - 1) * (eps_r2 - eps0)
    )


def _end_points(sigmas: torch.Tensor) -> tuple[float, float]:
    positive = [v for v in sigmas.tolist() if v > 0]
    return positive[0], positive[-1]


def _ancestral_target(t: float, t_next: float, t_end: float, eta: float, space: NoiseSpace):
    """Where the deterministic part of an η-step should land (in t) and the noise std to add."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = space.ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_down = t_end if sigma_down <= 0 else min(t_end, -math.log(sigma_down))  # σ_down 0: to the end
    return t_down, space.noise_std(_sigma(t_down), _sigma(t_next)) if t_down > t_next else 0.0


def _renoise(space: NoiseSpace, x, noise, t_down: float, t_next: float, sigma_up: float):
    return space.renoise(x, noise, _sigma(t_down), _sigma(t_next), sigma_up)


def _one_step(denoise, x, sigmas, callback):
    """A one-step schedule has no interval to integrate over: return x̂₀, as the step to σ = 0 does."""
    denoised = denoise(x, sigmas[0])
    report(callback, 0, 1, denoised, denoised, float(sigmas[0]))
    return denoised


def sample_dpm_fast(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """DPM fast: exactly len(sigmas) − 1 model calls, spent as DPM-Solver-3 steps (the last one or
    two of lower order) on a grid uniform in log σ between the schedule's end points."""
    opts = options or SamplerOptions()
    nfe = len(sigmas) - 1
    sigma_max, sigma_min = _end_points(sigmas)
    if sigma_min >= sigma_max:
        return _one_step(denoise, x, sigmas, callback)
    eps = _eps_fn(denoise, sigmas)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    intervals = nfe // 3 + 1
    ts = torch.linspace(t_start, t_end, intervals + 1, dtype=torch.float64).tolist()
    orders = [3] * (intervals - 2) + [2, 1] if nfe % 3 == 0 else [3] * (intervals - 1) + [nfe % 3]
    calls = 0
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_down, sigma_up = _ancestral_target(t, t_next, t_end, opts.eta_ancestral, space)
        eps0 = eps(x, t)
        denoised = x - _sigma(t) * eps0
        if order == 1:
            x = _step_1(x, t, t_down, eps0)
        elif order == 2:
            x, _ = _step_2(x, t, t_down, eps0, eps)
        else:
            x = _step_3(x, t, t_down, eps0, eps)
        if sigma_up > 0:
            x = _renoise(space, x, noise(x) * opts.s_noise, t_down, t_next, sigma_up)
        for _ in range(order):  # progress counts model calls, so it ends at the step count
            report(callback, calls, nfe, x, denoised, _sigma(t))
            calls += 1
    return x


class _StepSizeController:
    """PID step-size control (Söderlind's digital filters) with an arctan limiter: the step grows or
    shrinks by (1/error)^(k/order), smoothly bounded, and is rejected below `accept_safety`."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.inv_errors: list[float] = []

    def propose_step(self, error: float) -> bool:
        inv_error = 1 / (error + self.eps)
        if not self.inv_errors:
            self.inv_errors = [inv_error] * 3
        self.inv_errors[0] = inv_error
        e0, e1, e2 = self.inv_errors
        factor = e0**self.b1 * e1**self.b2 * e2**self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errors[2], self.inv_errors[1] = e1, e0
        self.h *= factor
        return accept


def sample_dpm_adaptive(
    denoise,
    x,
    sigmas,
    *,
    noise,
    callback=None,
    options=None,
    space: NoiseSpace = VE,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
):
    """DPM adaptive: each attempt computes a 2nd- and a 3rd-order step (3 model calls, shared) and
    uses their difference as the error estimate; the step count follows the tolerance, not `steps`.
    The error norm is over the whole batch (as in k-diffusion), so images of a batch share steps.
    Progress is reported as the share of the log σ range covered, mapped onto the schedule's steps."""
    if order not in (2, 3):
        raise ValueError("DPM adaptive order must be 2 or 3")
    opts = options or SamplerOptions()
    eta = opts.eta_ancestral
    steps = len(sigmas) - 1
    sigma_max, sigma_min = _end_points(sigmas)
    if sigma_min >= sigma_max:
        return _one_step(denoise, x, sigmas, callback)
    eps = _eps_fn(denoise, sigmas)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    controller = _StepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    s, x_prev, reported, denoised = t_start, x, 0, x
    for _ in range(MAX_ADAPTIVE_ATTEMPTS):
        if s >= t_end - 1e-5:
            break
        t = min(t_end, s + controller.h)
        t_down, sigma_up = _ancestral_target(s, t, t_end, eta, space)
        eps0 = eps(x, s)
        denoised = x - _sigma(s) * eps0
        if order == 2:
            x_low = _step_1(x, s, t_down, eps0)
            x_high, _ = _step_2(x, s, t_down, eps0, eps)
        else:
            x_low, eps_r1 = _step_2(x, s, t_down, eps0, eps, r1=1 / 3)
            x_high = _step_3(x, s, t_down, eps0, eps, eps_r1=eps_r1)
        delta = torch.maximum(torch.full_like(x_low, atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.vector_norm((x_low - x_high) / delta)) / math.sqrt(x.numel())
        if not math.isfinite(error):
            raise ValueError("DPM adaptive: the model returned non-finite values")
        if controller.propose_step(error):
            x_prev = x_low
            x = x_high
            if sigma_up > 0:  # unscaled: A1111 does not pass s_noise to DPM adaptive
                x = _renoise(space, x, noise(x), t_down, t, sigma_up)
            s = t
            done = min(steps, int(steps * (s - t_start) / (t_end - t_start)))
            while reported < done:
                report(callback, reported, steps, x, denoised, _sigma(s))
                reported += 1
    else:
        raise RuntimeError(f"DPM adaptive did not reach σ_min in {MAX_ADAPTIVE_ATTEMPTS} attempts")
    while reported < steps:
        report(callback, reported, steps, x, denoised, sigma_min)
        reported += 1
    return x
