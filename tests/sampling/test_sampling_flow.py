"""Every sampler on a rectified-flow model (SD 3, Flux), against closed-form answers.

In flow parameterisation x_σ = (1 − σ)·x₀ + σ·ε, σ ∈ (0, 1]. For Gaussian data x₀ ~ N(0, s²) the
exact denoiser is D(x, σ) = x·(1 − σ)s² / v(σ) with v(σ) = (1 − σ)²s² + σ², and the probability-flow
ODE maps x(σ) to x(σ)·sqrt(v(σ_to) / v(σ)). As for ε-models (tests/sampling/test_sampling.py), the
deterministic samplers must converge to it at their order, starting from pure noise at σ = 1, and
the stochastic ones, whose fresh noise follows the flow rule (`NoiseSpace`), must end with std ≈ s
and mean ≈ 0. A sampler using the VE noise rule on a flow model fails the second test.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.pipeline.rng import ImageRNG
from engine.sampling.base import FLOW, VE, SamplerOptions
from engine.sampling.registry import SAMPLERS, SCHEDULES, build_sigmas, schedule_names
from engine.sampling.schedules import FlowSigmas, shifted
from tests.fakes.sampling import expected_unet_calls

S_DATA = 0.5
SHIFT = 3.0
MODEL = FlowSigmas.with_shift(SHIFT)
DETERMINISTIC = SamplerOptions(eta_ancestral=0.0)


def variance(sigma):
    return (1 - sigma) ** 2 * S_DATA**2 + sigma**2


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * (1 - sigma) * S_DATA**2 / variance(sigma)


def flow(x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    return x * math.sqrt(variance(sigma_to) / variance(sigma_from))


def run(name: str, steps: int, x: torch.Tensor, options=DETERMINISTIC, noise=None) -> torch.Tensor:
    sigmas = SCHEDULES["Karras"].fn(steps, MODEL).double()
    assert sigmas[0] == 1.0  # the flow starts at pure noise: x = ε
    noise = noise or ImageRNG([3], tuple(x.shape[1:]), torch.device("cpu"))
    return SAMPLERS[name].fn(exact_denoiser, x.double(), sigmas, noise=noise, options=options, space=FLOW)


ENDS_ON_FLOW_AT_ZERO = {"LMS"}
ENDS_AT_SIGMA_MIN = {"DPM fast", "DPM adaptive"}


def ode_error(name: str, steps: int, options=DETERMINISTIC) -> float:
    x = torch.randn(1, 4096, generator=torch.Generator().manual_seed(0)).double()
    sigmas = SCHEDULES["Karras"].fn(steps, MODEL).double()
    s_min = float(sigmas[-2])
    x_min = flow(x, 1.0, s_min)
    if name in ENDS_ON_FLOW_AT_ZERO:
        exact = flow(x, 1.0, 0.0)
    elif name in ENDS_AT_SIGMA_MIN:
        exact = x_min
    else:
        exact = exact_denoiser(x_min, torch.tensor(s_min, dtype=torch.float64))
    return float((run(name, steps, x, options) - exact).abs().mean())


# Mean order as the steps go from 20 to 80 (29 to 119 for DPM fast), measured: Euler, DDIM, DDIM CFG++
# 1.00; Heun, DPM2, DPM2 a, DPM++ 2M 2.05–2.07; DPM++ SDE, 2S a 1.90; 2M SDE 1.83, its Heun variant
# 1.81; 3M SDE 2.16; PLMS 1.77; LMS 2.49; UniPC 2.87; DPM fast 3.26. On an ε-model the trajectory is
# nearly straight at σ_max, so the low-order start-up steps of the multistep methods cost nothing;
# from a flow model's pure noise it bends at once, and those first steps cap LMS, UniPC and 3M SDE
# near second order (LMS's rate falls from 2.7 towards 2.1 as the steps double up to 320).
@pytest.mark.parametrize(
    ("name", "low", "high", "steps"),
    [
        ("Euler", 0.9, 1.1, (20, 80)),
        ("DDIM", 0.9, 1.1, (20, 80)),
        ("DDIM CFG++", 0.9, 1.1, (20, 80)),
        ("Heun", 1.9, 2.2, (20, 80)),
        ("DPM2", 1.9, 2.2, (20, 80)),
        ("DPM2 a", 1.9, 2.2, (20, 80)),
        ("DPM++ 2M", 1.9, 2.2, (20, 80)),
        ("DPM++ 2M SDE", 1.7, 2.1, (20, 80)),
        ("DPM++ 2M SDE Heun", 1.7, 2.1, (20, 80)),
        ("DPM++ SDE", 1.8, 2.1, (20, 80)),
        ("DPM++ 2S a", 1.8, 2.1, (20, 80)),
        ("DPM++ 3M SDE", 2.0, 2.4, (20, 80)),
        ("PLMS", 1.65, 2.1, (20, 80)),
        ("LMS", 2.3, 2.8, (20, 80)),
        ("UniPC", 2.6, 3.2, (20, 80)),
        ("DPM fast", 3.0, 3.6, (29, 119)),
    ],
)
def test_deterministic_samplers_converge_at_their_order_on_a_flow_model(name, low, high, steps):
    coarse, fine = (ode_error(name, n) for n in steps)
    assert fine < 0.02, (coarse, fine)
    assert low < math.log2(coarse / fine) / 2 < high, (coarse, fine)  # 2 doublings of the steps


def test_dpm_adaptive_meets_its_tolerance_on_a_flow_model():
    assert ode_error("DPM adaptive", 10) < 0.02


def sample_with(name: str, steps: int, space=FLOW, schedule: str = "Automatic", **options) -> torch.Tensor:
    sigmas = build_sigmas(name, schedule, steps, MODEL).double()
    noise = ImageRNG([7], (20000,), torch.device("cpu"))
    x = noise.next().double() * sigmas[0]
    return SAMPLERS[name].fn(
        exact_denoiser, x, sigmas, noise=noise, options=SamplerOptions(**options), space=space
    )


STOCHASTIC = [
    ("Euler a", 160, "Karras", {}),
    ("DDIM", 160, "Karras", {"eta_ddim": 1.0}),
    ("DPM2 a", 40, "Karras", {}),
    ("DPM++ 2S a", 40, "Karras", {}),
    ("DPM++ SDE", 40, "Karras", {}),
    ("DPM++ 2M SDE", 40, "Karras", {}),
    ("DPM++ 2M SDE Heun", 40, "Karras", {}),
    ("DPM++ 3M SDE", 40, "Karras", {}),
    ("DPM fast", 40, "Karras", {}),
    ("DPM adaptive", 40, "Karras", {}),
    ("Restart", 40, "Karras", {}),
    ("Heun", 40, "Karras", {"s_churn": 20.0}),  # churn: fresh noise raises σ before each step
]


@pytest.mark.parametrize(("name", "steps", "schedule", "options"), STOCHASTIC)
def test_stochastic_samplers_reproduce_the_data_distribution_on_a_flow_model(name, steps, schedule, options):
    out = sample_with(name, steps, schedule=schedule, **options)
    assert torch.isfinite(out).all()
    assert abs(float(out.std()) - S_DATA) < 0.02, float(out.std())
    assert abs(float(out.mean())) < 0.02


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M SDE", "DPM++ SDE"])
def test_the_ve_noise_rule_would_get_a_flow_model_wrong(name):
    """The reason for the flow rule: VE noise on flow latents leaves the wrong spread."""
    out = sample_with(name, 40, space=VE, schedule="Karras")
    assert not abs(float(out.std()) - S_DATA) < 0.05, float(out.std())


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("schedule", schedule_names())
def test_every_sampler_and_schedule_runs_on_a_flow_model(name, schedule):
    """No NaN, σ's within (0, 1], and the expected number of model calls."""
    sigmas = build_sigmas(name, schedule, 8, MODEL)
    assert float(sigmas.max()) <= 1.0 and float(sigmas.min()) >= 0.0
    calls = []

    def counting(x, sigma):
        calls.append(float(sigma))
        return exact_denoiser(x, sigma)

    noise = ImageRNG([5], (64,), torch.device("cpu"))
    out = SAMPLERS[name].fn(counting, noise.next() * sigmas[0], sigmas, noise=noise, space=FLOW)
    assert torch.isfinite(out).all()
    assert all(0 <= s <= 1 for s in calls), calls
    expected = expected_unet_calls(name, sigmas)
    if expected is not None and name != "Restart":  # Restart's own plan sets its calls
        assert len(calls) == expected


def test_the_flow_table_is_the_shifted_training_discretization():
    tau = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(MODEL.sigmas.double(), shifted(tau, SHIFT), atol=1e-7)
    assert MODEL.sigma_max == 1.0 and MODEL.space is FLOW
    t = torch.tensor([0.0, 10.5, 500.0, 999.0])
    assert torch.allclose(MODEL.sigma_to_t(MODEL.t_to_sigma(t)), t, atol=1e-3)
    uniform = SCHEDULES["Uniform"].fn(4, MODEL)
    assert (
        uniform[0] == 1.0
        and uniform[-1] == 0.0
        and float(uniform[-2]) == pytest.approx(float(MODEL.sigmas[0]))
    )
    with pytest.raises(ValueError, match="the flow shift must be a number > 0"):
        FlowSigmas.with_shift(0.0)


def test_a_sigma_max_above_pure_noise_is_refused_for_a_flow_model():
    with pytest.raises(ValueError, match="sigma max is at most 1"):
        build_sigmas("Euler", "Karras", 8, MODEL, SamplerOptions(sigma_max=2.0))


def test_align_your_steps_maps_to_the_same_noise_to_signal_ratios():
    ours = SCHEDULES["Align Your Steps"].fn(11, MODEL)[:-1].double()
    table = torch.tensor([14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029])
    assert torch.allclose(ours / (1 - ours), table.double(), rtol=1e-5)


def test_lcm_renoises_its_estimate_by_the_flow_rule():
    """LCM jumps to x̂₀ and renoises to the next σ: (1 − σ)·x̂₀ + σ·ε for a flow model."""
    sigmas = torch.tensor([1.0, 0.6, 0.0])
    draws = []

    def noise(x):
        draws.append(torch.full_like(x, 2.0))
        return draws[-1]

    def denoise(x, sigma):
        return torch.full_like(x, 0.5)

    out = SAMPLERS["LCM"].fn(denoise, torch.zeros(4), sigmas, noise=noise, space=FLOW, callback=None)
    assert len(draws) == 1 and torch.allclose(out, torch.full((4,), 0.5))
    seen = []
    SAMPLERS["LCM"].fn(
        lambda x, sigma: seen.append(x.clone()) or torch.full_like(x, 0.5),
        torch.zeros(4), sigmas, noise=noise, space=FLOW,
    )  # fmt: skip
    assert torch.allclose(seen[1], torch.full((4,), 0.4 * 0.5 + 0.6 * 2.0))
