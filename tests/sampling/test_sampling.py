"""Samplers and schedules against closed-form answers.

For Gaussian data x₀ ~ N(0, s²) the exact denoiser is D(x, σ) = x·s²/(s² + σ²), and the probability
flow ODE has the exact solution x(σ) = x(σ_max)·sqrt(σ² + s²)/sqrt(σ_max² + s²). Deterministic
samplers must converge to it at their order; stochastic ones must produce std ≈ s and mean ≈ 0.

Orders measured here (Karras schedule, mean |error| as steps double 20 → 40 → 80, η = 0 where the
sampler has an η): Euler, DDIM, DDIM CFG++ 1.0; Heun, DPM2, DPM2 a 2.1; DPM++ 2M and 2M SDE 2.1;
DPM++ 2M SDE Heun 2.1–2.2; DPM++ SDE, DPM++ 2S a 2.0; DPM++ 3M SDE 1.7–1.8 (→ 2: its first step is
first order, which caps a multistep method's global order); PLMS 2.1–2.2 (equal-step Adams–Bashforth
weights on an uneven grid are second order); LMS 3.5–3.8 (→ 4); UniPC (bh1, order 3 + corrector)
4.4–5.0; DPM fast 3.1–3.4 (budgets of 3k+2 calls, so every step but the last is DPM-Solver-3).
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.pipeline.rng import ImageRNG
from engine.sampling.k_samplers import restart_plan
from engine.sampling.registry import (
    SAMPLERS,
    SCHEDULES,
    build_sigmas,
    effective_schedule,
    resolve_sampler_and_schedule,
    sampler_names,
    schedule_names,
)
from engine.sampling.samplers import SamplerOptions
from engine.sampling.schedules import karras, uniform
from tests.fakes.sampling import MODEL, gaussian_noise

S_DATA = 0.5
DETERMINISTIC = SamplerOptions(eta_ancestral=0.0)


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * S_DATA**2 / (S_DATA**2 + sigma**2)


def run(name: str, steps: int, x: torch.Tensor, schedule: str = "Karras", options=None) -> torch.Tensor:
    sigmas = SCHEDULES[schedule].fn(steps, MODEL).double()
    return SAMPLERS[name].fn(
        exact_denoiser, x.double() * sigmas[0], sigmas, noise=gaussian_noise(1), options=options
    )


def flow(x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    return x * math.sqrt(sigma_to**2 + S_DATA**2) / math.sqrt(sigma_from**2 + S_DATA**2)


# How a sampler ends a schedule σ_max … σ_min, 0: most take the last step as x = D(x, σ_min); LMS
# integrates its polynomial down to 0; DPM fast/adaptive stop at σ_min (as k-diffusion does).
ENDS_ON_FLOW_AT_ZERO = {"LMS"}
ENDS_AT_SIGMA_MIN = {"DPM fast", "DPM adaptive"}


def ode_error(name: str, steps: int, options=DETERMINISTIC) -> float:
    """Mean |error| against the exact solution for the way `name` ends the schedule."""
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)).double()
    sigmas = SCHEDULES["Karras"].fn(steps, MODEL).double()
    s_max, s_min = float(sigmas[0]), float(sigmas[-2])
    x_min = flow(x * s_max, s_max, s_min)
    if name in ENDS_ON_FLOW_AT_ZERO:
        exact = flow(x * s_max, s_max, 0.0)
    elif name in ENDS_AT_SIGMA_MIN:
        exact = x_min
    else:
        exact = exact_denoiser(x_min, torch.tensor(s_min, dtype=torch.float64))
    return float((run(name, steps, x, options=options) - exact).abs().mean())


@pytest.mark.parametrize(
    ("name", "low", "high", "steps"),
    [
        ("Euler", 0.9, 1.2, (20, 40, 80)),
        ("DDIM", 0.9, 1.2, (20, 40, 80)),
        ("DDIM CFG++", 0.9, 1.2, (20, 40, 80)),
        ("Heun", 1.9, 2.4, (20, 40, 80)),
        ("DPM2", 1.9, 2.4, (20, 40, 80)),
        ("DPM2 a", 1.9, 2.4, (20, 40, 80)),
        ("DPM++ 2M", 1.8, 2.4, (20, 40, 80)),
        ("DPM++ 2M SDE", 1.8, 2.4, (20, 40, 80)),
        ("DPM++ 2M SDE Heun", 1.9, 2.5, (20, 40, 80)),
        ("DPM++ SDE", 1.9, 2.3, (20, 40, 80)),
        ("DPM++ 2S a", 1.9, 2.3, (20, 40, 80)),
        ("DPM++ 3M SDE", 1.6, 2.2, (20, 40, 80)),
        ("PLMS", 1.9, 2.5, (20, 40, 80)),
        ("LMS", 3.3, 4.3, (20, 40, 80)),
        ("UniPC", 3.8, 5.5, (20, 40, 80)),
        ("DPM fast", 2.9, 3.8, (29, 59, 119)),
    ],
)
def test_deterministic_samplers_converge_at_their_order(name, low, high, steps):
    errors = [ode_error(name, n) for n in steps]
    assert errors[-1] < 0.02, errors
    # Doubling the steps divides the error by ~2^order.
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert low < math.log2(coarse / fine) < high, errors


@pytest.mark.parametrize("variant", ["bh1", "bh2", "vary_coeff"])
@pytest.mark.parametrize(("order", "low"), [(1, 1.9), (2, 2.9), (3, 3.8)])
def test_unipc_corrector_adds_one_order(variant, order, low):
    options = SamplerOptions(uni_pc_variant=variant, uni_pc_order=order, uni_pc_lower_order_final=False)
    errors = [ode_error("UniPC", n, options) for n in (20, 40, 80)]
    assert math.log2(errors[1] / errors[2]) > low, errors


def test_higher_order_samplers_are_far_more_accurate_than_euler():
    euler = ode_error("Euler", 40)
    for name in ("DPM++ 2M", "Heun", "LMS", "UniPC", "DPM++ 3M SDE"):
        assert ode_error(name, 40) * 10 < euler, name


def test_dpm_adaptive_meets_its_tolerance_whatever_the_step_count():
    errors = [ode_error("DPM adaptive", n) for n in (10, 40)]
    assert errors[0] == errors[1] < 0.02  # adaptive: the step count only scales the progress reports


def test_restart_below_20_steps_is_heun_and_from_20_restarts():
    x = torch.randn(256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run("Restart", 12, x), run("Heun", 12, x))
    for steps, segments in ((20, 1), (36, 2)):
        plan = restart_plan(karras(steps, MODEL).tolist())
        assert len(plan) == steps  # restart steps come out of the step budget, as in A1111
        jumps = [i for i in range(1, len(plan)) if plan[i][0] > plan[i - 1][1]]
        assert len(jumps) == segments
        assert all(plan[i][0] > 1.5 and plan[i - 1][1] < 0.2 for i in jumps)


def sample_with(name: str, steps: int, *, brownian: bool, schedule: str = "Automatic", **options):
    sigmas = build_sigmas(name, schedule, steps, MODEL).double()
    if brownian:
        noise = ImageRNG([7], (20000,), torch.device("cpu"))
        x = noise.next().double()
    else:
        noise = gaussian_noise(3)
        x = torch.randn(1, 20000, generator=torch.Generator().manual_seed(5)).double()
    return SAMPLERS[name].fn(
        exact_denoiser, x * sigmas[0], sigmas, noise=noise, options=SamplerOptions(**options)
    )


@pytest.mark.parametrize(
    ("name", "steps", "schedule", "options"),
    [
        ("Euler a", 160, "Karras", {}),  # first-order SDE solvers: std bias shrinks ~ 1/steps
        ("DDIM", 160, "Karras", {"eta_ddim": 1.0}),
        ("DPM2 a", 40, "Automatic", {}),
        ("DPM++ 2S a", 40, "Automatic", {}),
        ("DPM++ SDE", 40, "Automatic", {}),
        ("DPM++ 2M SDE", 40, "Automatic", {}),
        ("DPM++ 2M SDE Heun", 40, "Automatic", {}),
        ("DPM++ 3M SDE", 40, "Automatic", {}),
        ("DPM fast", 40, "Automatic", {}),
        ("DPM adaptive", 40, "Automatic", {}),
        ("Restart", 40, "Automatic", {}),  # 40 steps: two restart segments
    ],
)
def test_stochastic_samplers_reproduce_the_data_distribution(name, steps, schedule, options):
    out = sample_with(name, steps, brownian=True, schedule=schedule, **options)
    assert abs(float(out.std()) - S_DATA) < 0.015, float(out.std())
    assert abs(float(out.mean())) < 0.015


@pytest.mark.parametrize("name", ["Euler", "Heun", "DPM2"])
def test_churn_raises_sigma_inside_the_window_only(name):
    """Karras et al. 2022, Algorithm 2: inside [s_tmin, s_tmax] each step first adds noise to raise σ
    to σ̂ = σ(1 + γ), γ = min(S_churn / steps, √2 − 1), and evaluates the model at σ̂."""
    sigmas = karras(10, MODEL).double()
    draws, seen = [], []

    def noise(x):
        draws.append(1)
        return torch.zeros_like(x)

    def denoise(x, sigma):
        seen.append(float(sigma))
        return exact_denoiser(x, sigma)

    options = SamplerOptions(s_churn=1.0, s_tmin=0.5, s_tmax=5.0)
    SAMPLERS[name].fn(denoise, torch.ones(4).double(), sigmas, noise=noise, options=options)
    window = [s for s in sigmas[:-1].tolist() if 0.5 <= s <= 5.0]
    assert len(draws) == len(window) > 0
    gamma = min(1.0 / 10, math.sqrt(2) - 1)
    raised = [s * (1 + gamma) if 0.5 <= s <= 5.0 else s for s in sigmas[:-1].tolist()]
    assert all(any(math.isclose(s, v, rel_tol=1e-12) for v in seen) for s in raised)
    assert SamplerOptions(s_tmax=0).churn_tmax == math.inf  # A1111: 0 means no upper bound


def test_dpmpp_sde_needs_correlated_brownian_increments():
    """DPM++ SDE draws noise for [σ, σ_mid] and then for [σ, σ_next] ⊃ it: independent draws
    (k-diffusion's fallback) over-damp the samples; the Brownian path gets the variance right."""
    independent = sample_with("DPM++ SDE", 40, brownian=False)
    brownian = sample_with("DPM++ SDE", 40, brownian=True)
    assert abs(float(brownian.std()) - S_DATA) < 0.01
    assert float(independent.std()) < S_DATA - 0.02


def test_lcm_jumps_to_the_denoised_estimate_and_renoises():
    x = torch.randn(8, generator=torch.Generator().manual_seed(0)).double()
    sigmas = torch.tensor([10.0, 1.0, 0.0], dtype=torch.float64)
    draws = []

    def noise(like):
        draws.append(torch.randn(like.shape, generator=torch.Generator().manual_seed(len(draws))).double())
        return draws[-1]

    out = SAMPLERS["LCM"].fn(exact_denoiser, x, sigmas, noise=noise)
    step_1 = exact_denoiser(x, sigmas[0]) + draws[0] * 1.0
    assert torch.allclose(out, exact_denoiser(step_1, sigmas[1]))


def test_ddim_cfgpp_renoises_along_the_unconditional_prediction():
    class Guider:  # cond and uncond data of different scales; CFG++ needs both
        def __call__(self, x, sigma):
            raise AssertionError("DDIM CFG++ must ask for the unconditional prediction")

        def with_uncond(self, x, sigma, scale_multiplier):
            uncond = x * 0.25 / (0.25 + sigma**2)
            cond = x * 0.64 / (0.64 + sigma**2)
            return uncond + 7.5 * scale_multiplier * (cond - uncond), uncond

    x = torch.randn(8, generator=torch.Generator().manual_seed(0)).double()
    sigmas = torch.tensor([10.0, 2.0, 0.0], dtype=torch.float64)
    out = SAMPLERS["DDIM CFG++"].fn(Guider(), x, sigmas, noise=gaussian_noise(0))
    guided, uncond = Guider().with_uncond(x, sigmas[0], 1 / 12.5)
    x_1 = guided + (x - uncond) / 10.0 * 2.0
    assert torch.allclose(out, Guider().with_uncond(x_1, sigmas[1], 1 / 12.5)[0])


def test_schedules_are_descending_and_end_in_zero():
    for name, spec in SCHEDULES.items():
        for steps in (1, 2, 12, 33):
            sigmas = spec.fn(steps, MODEL)
            assert torch.all(sigmas[:-1] > 0), name
            assert torch.all(sigmas[1:] < sigmas[:-1]), name
            assert float(sigmas[0]) <= MODEL.sigma_max * 1.0001
            if name == "KL Optimal":  # A1111 1.10 ends it at σ_min: steps intervals, no zero
                assert len(sigmas) == steps + 1 and math.isclose(
                    float(sigmas[-1]), MODEL.sigma_min, rel_tol=1e-5
                )
            else:
                assert len(sigmas) == steps + 1, name
                assert float(sigmas[-1]) == 0.0


def test_karras_endpoints_and_uniform_matches_model_table():
    k = karras(10, MODEL)
    assert math.isclose(float(k[0]), MODEL.sigma_max, rel_tol=1e-5)
    assert math.isclose(float(k[-2]), MODEL.sigma_min, rel_tol=1e-5)
    u = uniform(1000, MODEL)
    assert torch.allclose(u[:-1].flip(0), MODEL.sigmas, rtol=1e-5)


def test_sigma_to_t_inverts_t_to_sigma():
    t = torch.tensor([0.0, 10.5, 500.25, 998.9, 999.0])
    assert torch.allclose(MODEL.sigma_to_t(MODEL.t_to_sigma(t)), t, atol=1e-3)


def test_dropdowns_list_a1111_names_in_a1111_order():
    assert sampler_names() == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
        "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
        "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
    ]  # fmt: skip
    assert schedule_names() == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
        "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("DPM++ 2M Karras", None), ("DPM++ 2M", "Karras")),
        (("dpm++ 2m", "karras"), ("DPM++ 2M", "Karras")),
        (("Euler a", None), ("Euler a", "Automatic")),
        (("k_euler_a", ""), ("Euler a", "Automatic")),
        (("Euler a Exponential", None), ("Euler a", "Exponential")),
        (("DDIM", "Automatic"), ("DDIM", "Automatic")),
        (("DPM++ 2M SDE Heun Karras", None), ("DPM++ 2M SDE Heun", "Karras")),
        (("DPM++ 2M SDE Karras", None), ("DPM++ 2M SDE", "Karras")),
        (("DPM2 a Karras", None), ("DPM2 a", "Karras")),
        (("k_dpmpp_2m", None), ("DPM++ 2M", "Automatic")),
        (("dpmpp_2m", None), ("DPM++ 2M", "Automatic")),
        (("k_dpmpp_3m_sde", None), ("DPM++ 3M SDE", "Automatic")),
        (("k_dpm_ad", None), ("DPM adaptive", "Automatic")),
        (("ddim_cfgpp", None), ("DDIM CFG++", "Automatic")),
        (("UniPC", "sgm_uniform"), ("UniPC", "SGM Uniform")),
        (("LMS", "SGMUniform"), ("LMS", "SGM Uniform")),
        (("Heun", "align_your_steps"), ("Heun", "Align Your Steps")),
        (("Euler", "kl_optimal"), ("Euler", "KL Optimal")),
    ],
)
def test_names_resolve_like_a1111(given, expected):
    assert resolve_sampler_and_schedule(*given) == expected


@pytest.mark.parametrize(("sampler", "schedule"), [("Nope", None), ("Euler", "Sideways"), ("Karras", None)])
def test_unknown_names_raise_with_choices(sampler, schedule):
    with pytest.raises(ValueError, match="choose one of"):
        resolve_sampler_and_schedule(sampler, schedule)


def test_automatic_schedule_is_a1111s_default_per_sampler():
    defaults = {
        "DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential",
        "DPM++ 2M SDE Heun": "Exponential", "DPM++ 2S a": "Karras", "DPM++ 3M SDE": "Exponential",
        "Euler a": "Uniform", "Euler": "Uniform", "LMS": "Uniform", "Heun": "Uniform", "DPM2": "Karras",
        "DPM2 a": "Karras", "DPM fast": "Uniform", "DPM adaptive": "Uniform", "Restart": "Karras",
        "DDIM": "DDIM", "DDIM CFG++": "DDIM", "PLMS": "DDIM", "UniPC": "Automatic", "LCM": "Automatic",
    }  # fmt: skip
    assert {name: effective_schedule(name, "Automatic") for name in SAMPLERS} == defaults
    assert effective_schedule("Euler", "Exponential") == "Exponential"
