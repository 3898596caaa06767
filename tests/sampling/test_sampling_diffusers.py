"""Our σ-space samplers against diffusers' schedulers running the same algorithm.

The model is a closed-form denoiser for a two-component Gaussian mixture (nonlinear in x, so
formulas that only agree for linear denoisers would not pass). Our samplers call it in σ-space;
diffusers gets it as an ε-prediction UNet stand-in, evaluated at the σ the scheduler scales
its input for (read from the scheduler or recovered from that scaling). Both sides start from the
same x, walk the same σ's and (for stochastic samplers) draw the same noise.

Tolerance: max |ours − diffusers| < 1e-4 on outputs of size ~2 (diffusers keeps σ's in float32 and
some schedulers compute the step in float32; we compute in float64). Measured: ≤ 2e-6 for every
case except DPM++ 3M (1.8e-5, diffusers' float32 third-order step).
"""

from __future__ import annotations

import math

import diffusers  # a dependency of the app: its absence must fail, not skip
import pytest
import torch

from engine.sampling.registry import SAMPLERS
from engine.sampling.samplers import SamplerOptions
from tests.fakes.sampling import ExactQuad

TOLERANCE = 1e-4
CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
MEANS, S_DATA = (-1.0, 1.0), 0.3


def mixture_denoiser(x: torch.Tensor, sigma) -> torch.Tensor:
    """E[x₀ | x] for x₀ ~ ½N(−1, 0.3²) + ½N(1, 0.3²) and x = x₀ + σ·n."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    var = S_DATA**2 + sigma**2
    logits = torch.stack([-((x - m) ** 2) / (2 * var) for m in MEANS])
    weights = torch.softmax(logits, dim=0)
    means = torch.stack([m + S_DATA**2 / var * (x - m) for m in MEANS])
    return (weights * means).sum(0)


def eps_model(x_in: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same denoiser as diffusers sees it: ε from the VP-scaled input x / sqrt(1 + σ²)."""
    x = x_in * math.sqrt(1 + sigma**2)
    return (x - mixture_denoiser(x, sigma)) / sigma


def sigma_from_scaling(scheduler, x, x_in, t) -> float:
    """k-diffusion-style schedulers scale x by 1/sqrt(σ² + 1) for the σ they evaluate at."""
    return math.sqrt(max(float(x.norm() / x_in.norm()) ** 2 - 1, 0.0))


def sigma_from_index(scheduler, x, x_in, t) -> float:
    return float(scheduler.sigmas[scheduler.step_index or 0])


def sigma_from_timestep(scheduler, x, x_in, t) -> float:
    ac = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt((1 - ac) / ac)


def table_sigma(scheduler, t: int) -> float:
    return sigma_from_timestep(scheduler, None, None, t)


def start(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def drive(
    scheduler,
    x,
    sigma_of,
    *,
    vp: bool,
    sigma_first: float,
    seed: int | None = None,
    noises: list[torch.Tensor] | None = None,
    **step_kwargs,
):
    """diffusers' sampling loop; x is the VE state at the first σ. Returns the state after each step
    (VE for k-diffusion-style schedulers, VP for the others). `seed` seeds the scheduler's own noise
    draws; `noises` hands it the noise of each step instead (DPM-Solver draws it in float32)."""
    if vp:  # DDIM/PNDM/DPM-Solver/UniPC keep x in the VP scale
        x = x / math.sqrt(1 + sigma_first**2)
    if seed is not None:
        step_kwargs["generator"] = torch.Generator().manual_seed(seed)
    states = []
    for i, t in enumerate(scheduler.timesteps):
        if noises is not None:
            step_kwargs["variance_noise"] = noises[i]
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(eps_model(x_in, sigma_of(scheduler, x, x_in, t)), t, x, **step_kwargs).prev_sample
        states.append(x.double())
    return states


def ours(name: str, sigmas, x, *, seed: int | None = None, options=None, noises=None):
    """Our sampler on the same σ's; returns the VE state after each step. Noise comes from a generator
    seeded like diffusers' or, given `noises`, is that list in order."""
    states = []
    generator = torch.Generator().manual_seed(seed if seed is not None else 0)
    queue = list(noises or [])

    def noise(like):
        if noises is not None:
            return queue.pop(0)
        return torch.randn(like.shape, generator=generator, dtype=like.dtype)

    SAMPLERS[name].fn(
        mixture_denoiser,
        x,
        torch.as_tensor(sigmas, dtype=torch.float64),
        noise=noise,
        callback=lambda info: states.append(info.x),
        options=options,
    )
    return states


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    diff = float((a - b).abs().max())
    assert diff < TOLERANCE, diff


def k_style(scheduler_class, name, steps=10, *, seed=None, options=None, **config):
    scheduler = scheduler_class(**CONFIG, **config)
    scheduler.set_timesteps(steps)
    sigmas = torch.unique_consecutive(scheduler.sigmas.double())  # Heun/DPM2 interleave repeats
    x = start() * float(sigmas[0])
    theirs = drive(scheduler, x, sigma_from_scaling, vp=False, sigma_first=float(sigmas[0]), seed=seed)
    return ours(name, sigmas, x, seed=seed, options=options), theirs


@pytest.mark.parametrize("karras", [False, True])
def test_euler(karras):
    mine, theirs = k_style(diffusers.EulerDiscreteScheduler, "Euler", use_karras_sigmas=karras)
    assert_close(mine[-1], theirs[-1])


def test_euler_ancestral():
    mine, theirs = k_style(diffusers.EulerAncestralDiscreteScheduler, "Euler a", seed=5)
    assert_close(mine[-1], theirs[-1])


def test_heun():
    mine, theirs = k_style(diffusers.HeunDiscreteScheduler, "Heun", use_karras_sigmas=True)
    assert_close(mine[-1], theirs[-1])


def test_dpm2():
    mine, theirs = k_style(diffusers.KDPM2DiscreteScheduler, "DPM2", use_karras_sigmas=True)
    assert_close(mine[-1], theirs[-1])


def test_dpm2_ancestral():
    mine, theirs = k_style(
        diffusers.KDPM2AncestralDiscreteScheduler, "DPM2 a", seed=3, use_karras_sigmas=True
    )
    assert_close(mine[-1], theirs[-1])


def test_lms(monkeypatch):
    from diffusers.schedulers import scheduling_lms_discrete

    monkeypatch.setattr(scheduling_lms_discrete, "integrate", ExactQuad, raising=False)
    mine, theirs = k_style(scheduling_lms_discrete.LMSDiscreteScheduler, "LMS", steps=12)
    assert_close(mine[-1], theirs[-1])


def vp_style(scheduler, name, steps, *, noises=None, options=None):
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()
    x = start() * float(sigmas[0])
    theirs = drive(scheduler, x, sigma_from_index, vp=True, sigma_first=float(sigmas[0]), noises=noises)
    return ours(name, sigmas, x, options=options, noises=noises), theirs


@pytest.mark.parametrize("karras", [False, True])
def test_dpmpp_2m(karras):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        **CONFIG,
        solver_order=2,
        algorithm_type="dpmsolver++",
        use_karras_sigmas=karras,
        final_sigmas_type="zero",
    )
    mine, theirs = vp_style(scheduler, "DPM++ 2M", 10)
    assert_close(mine[-1], theirs[-1])


@pytest.mark.parametrize(
    ("name", "solver_type"), [("DPM++ 2M SDE", "midpoint"), ("DPM++ 2M SDE Heun", "heun")]
)
def test_dpmpp_2m_sde(name, solver_type):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        **CONFIG,
        solver_order=2,
        algorithm_type="sde-dpmsolver++",
        solver_type=solver_type,
        use_karras_sigmas=True,
    )
    noises = [
        torch.randn(2, 64, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(10)
    ]
    mine, theirs = vp_style(scheduler, name, 10, noises=noises)  # a plain noise source: no Brownian path
    assert_close(mine[-1], theirs[-1])


def test_dpmpp_3m_sde_without_noise_is_dpm_solver_pp_3m():
    # 16 steps: diffusers only lowers the order of the next-to-last step below 15 steps.
    scheduler = diffusers.DPMSolverMultistepScheduler(
        **CONFIG, solver_order=3, algorithm_type="dpmsolver++", use_karras_sigmas=True
    )
    mine, theirs = vp_style(scheduler, "DPM++ 3M SDE", 16, options=SamplerOptions(eta_ancestral=0.0))
    assert_close(mine[-1], theirs[-1])


def test_dpmpp_2s_without_noise_is_singlestep_dpm_solver_pp_2():
    """diffusers' single-step DPM-Solver++(2) takes its intermediate point from the schedule, so on a
    schedule uniform in log σ every other σ is our log-midpoint. Its final pair is two first-order
    steps, so the trajectories are compared up to there."""
    scheduler = diffusers.DPMSolverSinglestepScheduler(
        **CONFIG, solver_order=2, algorithm_type="dpmsolver++", use_exponential_sigmas=True
    )
    scheduler.set_timesteps(12)
    sigmas = scheduler.sigmas.double()
    x = start() * float(sigmas[0])
    theirs = drive(scheduler, x, sigma_from_index, vp=True, sigma_first=float(sigmas[0]))
    mine = ours("DPM++ 2S a", sigmas[::2], x, options=SamplerOptions(eta_ancestral=0.0))
    for k in range(5):
        scale = math.sqrt(1 + float(sigmas[2 * k + 2]) ** 2)  # their VP state back to VE
        assert_close(mine[k], theirs[2 * k + 1] * scale)


@pytest.mark.parametrize(("variant", "final"), [("bh1", "sigma_min"), ("bh2", "zero"), ("bh2", "sigma_min")])
def test_unipc(variant, final):
    """diffusers' bh1 step to σ = 0 is NaN (B(h) = −∞ times a zero residual), so bh1 is compared on a
    schedule ending at σ_min, as A1111 runs UniPC."""
    scheduler = diffusers.UniPCMultistepScheduler(
        **CONFIG,
        solver_order=3,
        solver_type=variant,
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type=final,
    )
    options = SamplerOptions(uni_pc_variant=variant, uni_pc_order=3, uni_pc_lower_order_final=True)
    mine, theirs = vp_style(scheduler, "UniPC", 10, options=options)
    assert_close(mine[-1] / math.sqrt(1 + float(scheduler.sigmas[-1]) ** 2), theirs[-1])


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim(eta):
    scheduler = diffusers.DDIMScheduler(**CONFIG, set_alpha_to_one=True, steps_offset=1, clip_sample=False)
    scheduler.set_timesteps(10)
    sigmas = [table_sigma(scheduler, int(t)) for t in scheduler.timesteps] + [0.0]
    x = start() * sigmas[0]
    theirs = drive(scheduler, x, sigma_from_timestep, vp=True, sigma_first=sigmas[0], seed=2, eta=eta)
    mine = ours("DDIM", sigmas, x, seed=2, options=SamplerOptions(eta_ddim=eta))
    assert_close(mine[-1], theirs[-1])


def test_plms():
    """PNDM without Runge–Kutta warm-up is PLMS. It ends at ᾱ_0 (σ_min), where both stay in the
    Adams–Bashforth regime (our PLMS takes a final step to σ = 0 as x̂₀)."""
    scheduler = diffusers.PNDMScheduler(**CONFIG, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(10)
    timesteps = torch.unique_consecutive(scheduler.timesteps).tolist()
    sigmas = [table_sigma(scheduler, t) for t in timesteps] + [table_sigma(scheduler, 0)]
    x = start() * sigmas[0]
    theirs = drive(scheduler, x, sigma_from_timestep, vp=True, sigma_first=sigmas[0])
    mine = ours("PLMS", sigmas, x)
    assert len(theirs) == len(mine) + 1  # one extra model call on the first step
    assert_close(mine[-1] / math.sqrt(1 + sigmas[-1] ** 2), theirs[-1])
