"""Samplers and schedules against closed-form answers.

For Gaussian data x₀ ~ N(0, s²) the exact denoiser is D(x, σ) = x·s²/(s² + σ²), and the probability
flow ODE has the exact solution x(σ) = x(σ_max)·sqrt(σ² + s²)/sqrt(σ_max² + s²). Deterministic
samplers must converge to it (higher order faster); stochastic ones must produce std ≈ s.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.sampling.registry import SAMPLERS, SCHEDULES, effective_schedule, resolve_sampler_and_schedule
from engine.sampling.schedules import ModelSigmas, karras, uniform

S_DATA = 0.5


def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


MODEL = ModelSigmas.from_alphas_cumprod(sd_alphas_cumprod())


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * S_DATA**2 / (S_DATA**2 + sigma**2)


def gaussian_noise(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=gen)


def run(name: str, steps: int, x: torch.Tensor, schedule: str = "Karras") -> torch.Tensor:
    sigmas = SCHEDULES[schedule].fn(steps, MODEL).double()
    return SAMPLERS[name].fn(exact_denoiser, x.double() * sigmas[0], sigmas, noise=gaussian_noise(1))


def ode_error(name: str, steps: int) -> float:
    """Mean |error| against the exact flow to σ_min followed by the exact last step D(x, σ_min)
    (every schedule ends σ_min → 0, which all samplers take as x = D(x, σ_min))."""
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)).double()
    sigmas = SCHEDULES["Karras"].fn(steps, MODEL).double()
    s_max, s_min = float(sigmas[0]), float(sigmas[-2])
    x_min = x * s_max * math.sqrt(s_min**2 + S_DATA**2) / math.sqrt(s_max**2 + S_DATA**2)
    exact = exact_denoiser(x_min, torch.tensor(s_min, dtype=torch.float64))
    return float((run(name, steps, x) - exact).abs().mean())


@pytest.mark.parametrize(("name", "order"), [("Euler", 1), ("DDIM", 1), ("DPM++ 2M", 2)])
def test_deterministic_samplers_converge_at_their_order(name, order):
    errors = [ode_error(name, steps) for steps in (20, 40, 80)]
    assert errors[2] < 0.05
    # Doubling the steps divides the error by ~2^order.
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 2**order * 0.75 < coarse / fine < 2**order * 1.6, errors


def test_dpmpp_2m_is_far_more_accurate_than_euler():
    assert ode_error("DPM++ 2M", 40) * 10 < ode_error("Euler", 40)


def test_euler_ancestral_samples_have_data_std():
    x = torch.randn(20000, generator=torch.Generator().manual_seed(3))
    out = run("Euler a", 160, x)  # a first-order SDE solver: its std bias shrinks ~ 1/steps
    assert abs(float(out.std()) - S_DATA) < 0.02
    assert abs(float(out.mean())) < 0.02


def test_schedules_are_descending_and_end_in_zero():
    for name, spec in SCHEDULES.items():
        sigmas = spec.fn(12, MODEL)
        assert len(sigmas) == 13, name
        assert float(sigmas[-1]) == 0.0
        assert torch.all(sigmas[:-1] > 0), name
        assert torch.all(sigmas[1:] < sigmas[:-1]), name
        assert float(sigmas[0]) <= MODEL.sigma_max * 1.0001


def test_karras_endpoints_and_uniform_matches_model_table():
    k = karras(10, MODEL)
    assert math.isclose(float(k[0]), MODEL.sigma_max, rel_tol=1e-5)
    assert math.isclose(float(k[-2]), MODEL.sigma_min, rel_tol=1e-5)
    u = uniform(1000, MODEL)
    assert torch.allclose(u[:-1].flip(0), MODEL.sigmas, rtol=1e-5)


def test_sigma_to_t_inverts_t_to_sigma():
    t = torch.tensor([0.0, 10.5, 500.25, 998.9, 999.0])
    assert torch.allclose(MODEL.sigma_to_t(MODEL.t_to_sigma(t)), t, atol=1e-3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("DPM++ 2M Karras", None), ("DPM++ 2M", "Karras")),
        (("dpm++ 2m", "karras"), ("DPM++ 2M", "Karras")),
        (("Euler a", None), ("Euler a", "Automatic")),
        (("k_euler_a", ""), ("Euler a", "Automatic")),
        (("Euler a Exponential", None), ("Euler a", "Exponential")),
        (("DDIM", "Automatic"), ("DDIM", "Automatic")),
    ],
)
def test_names_resolve_like_a1111(given, expected):
    assert resolve_sampler_and_schedule(*given) == expected


@pytest.mark.parametrize(("sampler", "schedule"), [("Nope", None), ("Euler", "Sideways"), ("Karras", None)])
def test_unknown_names_raise_with_choices(sampler, schedule):
    with pytest.raises(ValueError, match="choose one of"):
        resolve_sampler_and_schedule(sampler, schedule)


def test_automatic_schedule_uses_sampler_default():
    assert effective_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert effective_schedule("DDIM", "Automatic") == "DDIM"
    assert effective_schedule("Euler", "Exponential") == "Exponential"
