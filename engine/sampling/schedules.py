"""σ schedules: each turns (steps, model discretization) into a descending σ sequence, in A1111's
"Schedule type" order. All end in σ = 0 except KL Optimal, which ends at σ_min as in A1111 1.10.

Written here rather than taken from a library because the A1111 schedule types are defined over the
model's own discrete σ table (k-diffusion's `DiscreteSchedule`), which diffusers' schedulers do not
expose as pure functions. `SCHEDULE_TABLE` lists them in A1111's dropdown order; the registry
(`engine.sampling.registry`) composes it, and its `build_sigmas` turns a request (sampler, schedule
type, steps, options) into the σ's a sampler runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.sampling.base import FLOW, VE, NoiseSpace, SamplerOptions


@dataclass(frozen=True)
class ModelSigmas:
    """The discrete σ table of a model (σ_t for t = 0..T-1), from its alphas_cumprod."""

    sigmas: torch.Tensor  # float32, ascending, length T

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> ModelSigmas:
        ac = alphas_cumprod.to(torch.float64)
        return cls(((1 - ac) / ac).sqrt().to(torch.float32))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous timestep → σ, interpolating log σ between the table's entries."""
        t = t.float().clamp(0, len(self.sigmas) - 1)
        low = t.floor().long()
        high = t.ceil().long()
        w = t - low
        log_sigmas = self.sigmas.log()
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    @property
    def space(self) -> NoiseSpace:
        """How this model's noisy latents are made (engine.sampling.base.NoiseSpace)."""
        return VE

    def model_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep the network takes at σ: a discrete model's continuous table index."""
        return self.sigma_to_t(sigma)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ → continuous timestep (the inverse of `t_to_sigma`), as the UNet expects."""
        log_sigma = sigma.float().log()
        log_sigmas = self.sigmas.log().to(sigma.device)
        dists = log_sigma - log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(log_sigmas) - 2)
        high = low + 1
        lo, hi = log_sigmas[low], log_sigmas[high]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * high).view(sigma.shape)


def shifted(tau: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching time shift σ = s·τ/(1 + (s − 1)·τ): s > 1 spends more steps at high noise."""
    return shift * tau / (1 + (shift - 1) * tau)


@dataclass(frozen=True)
class FlowSigmas(ModelSigmas):
    """A rectified-flow model's σ table (SD 3, Flux): σ_t = shifted((t + 1)/T) for t = 0..T−1, the
    discretization of their training (and of ComfyUI's and diffusers' flow schedulers). σ ∈ (0, 1],
    σ = 1 being pure noise; the index ↔ σ maps are exact rather than log-interpolated."""

    shift: float = 1.0
    multiplier: float = 1000.0  # the network's timestep is σ × this (SD 3: 1000; Flux: 1)

    @classmethod
    def with_shift(cls, shift: float, count: int = 1000, multiplier: float = 1000.0) -> FlowSigmas:
        if not math.isfinite(shift) or shift <= 0:
            raise ValueError(f"the flow shift must be a number > 0, got {shift}")
        tau = torch.arange(1, count + 1, dtype=torch.float64) / count
        return cls(shifted(tau, shift).float(), shift, multiplier)

    @property
    def space(self) -> NoiseSpace:
        return FLOW

    def model_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.float() * self.multiplier

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        count = len(self.sigmas)
        tau = (t.double().clamp(0, count - 1) + 1) / count
        return shifted(tau, self.shift).float()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.double()
        tau = sigma / (self.shift - (self.shift - 1) * sigma)
        return (tau * len(self.sigmas) - 1).float()


@dataclass(frozen=True)
class ScheduleSettings:
    """What a schedule may take from the request besides the step count. None = the model's value
    (σ range) or the schedule's own default (ρ). Schedules that A1111 defines on the model's table
    (Uniform, Simple, DDIM, Align Your Steps) ignore the σ overrides, as A1111 does."""

    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None
    beta_alpha: float = 0.6
    beta_beta: float = 0.6
    is_sdxl: bool = False  # Align Your Steps has separate SD 1.5 and SDXL tables

    def sigma_range(self, model: ModelSigmas) -> tuple[float, float]:
        low = self.sigma_min if self.sigma_min else model.sigma_min
        high = self.sigma_max if self.sigma_max else model.sigma_max
        if not 0 < low < high:
            raise ValueError(f"the schedule needs 0 < sigma min < sigma max, got {low} and {high}")
        if high > model.space.sigma_ceiling:
            raise ValueError(f"a flow model's sigma max is at most 1 (pure noise), got {high}")
        return low, high


DEFAULT_SETTINGS = ScheduleSettings()


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: n σ's evenly spaced in σ^(1/ρ) from σ_max to σ_min, then 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero(((max_inv + ramp * (min_inv - max_inv)) ** rho).float())


def uniform(steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Timesteps evenly spaced from T-1 to 0 (k-diffusion's `get_sigmas`, A1111's default)."""
    t = torch.linspace(len(model.sigmas) - 1, 0, steps)
    return append_zero(model.t_to_sigma(t))


def karras(steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Karras et al. (2022): dense near σ_min, where detail is decided; ρ defaults to 7."""
    low, high = settings.sigma_range(model)
    return karras_sigmas(steps, low, high, settings.rho or 7.0)


def exponential(
    steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS
) -> torch.Tensor:
    """Evenly spaced in log σ (uniform in log-SNR, the DPM-Solver papers' choice)."""
    low, high = settings.sigma_range(model)
    return append_zero(
        torch.linspace(math.log(high), math.log(low), steps, dtype=torch.float64).exp().float()
    )


def polyexponential(
    steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS
) -> torch.Tensor:
    """log σ follows a ramp raised to ρ (default 1 = Exponential; larger ρ spends more steps low)."""
    low, high = settings.sigma_range(model)
    ramp = torch.linspace(1, 0, steps, dtype=torch.float64) ** (settings.rho or 1.0)
    return append_zero(torch.exp(ramp * (math.log(high) - math.log(low)) + math.log(low)).float())


def _timesteps_between(model: ModelSigmas, settings: ScheduleSettings, count: int) -> torch.Tensor:
    low, high = settings.sigma_range(model)
    start = float(model.sigma_to_t(torch.tensor(high)))
    end = float(model.sigma_to_t(torch.tensor(low)))
    return torch.linspace(start, end, count)


def sgm_uniform(
    steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS
) -> torch.Tensor:
    """Stability's SGM sampling: steps+1 evenly spaced timesteps, the last (t = 0) replaced by σ = 0."""
    return append_zero(model.t_to_sigma(_timesteps_between(model, settings, steps + 1)[:-1]))


def kl_optimal(steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Sabour et al. (2024), "Align Your Steps" App. B: evenly spaced in arctan σ. Like A1111 1.10 it
    returns steps+1 values ending at σ_min (not 0), so the image keeps σ_min's residual noise."""
    low, high = settings.sigma_range(model)
    i = torch.arange(steps + 1, dtype=torch.float64) / steps
    return torch.tan(i * math.atan(low) + (1 - i) * math.atan(high)).float()


# NVIDIA's published 10-step Align Your Steps σ's (research.nvidia.com/labs/toronto-ai/AlignYourSteps).
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def _loglinear_interp(values: tuple[float, ...], count: int) -> np.ndarray:
    """Resample a decreasing table to `count` points, linearly in log σ (NVIDIA's recipe)."""
    xs = np.linspace(0, 1, len(values))
    ys = np.log(np.asarray(values[::-1]))
    return np.exp(np.interp(np.linspace(0, 1, count), xs, ys))[::-1].copy()


def align_your_steps(
    steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS
) -> torch.Tensor:
    """Sabour et al. (2024): σ's optimised for SD 1.5 / SDXL, resampled to the step count. A fixed
    table (as in A1111): it ignores the model's σ range and the overrides. A flow model gets the σ's
    of the same noise-to-signal ratios (there are no published tables for those models)."""
    table = AYS_SDXL if settings.is_sdxl else AYS_SD15
    values = np.asarray(table) if steps == len(table) else _loglinear_interp(table, steps)
    values = np.asarray([model.space.from_ve(float(v)) for v in values]) if model.space.flow else values
    return append_zero(torch.tensor(values, dtype=torch.float32))


def simple(steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """ComfyUI's "simple": every (T/steps)-th entry of the model's table from the top, no interpolation."""
    stride = len(model.sigmas) / steps
    picked = [float(model.sigmas[-(1 + int(k * stride))]) for k in range(steps)]
    return append_zero(torch.tensor(picked, dtype=torch.float32))


def normal(steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Timesteps evenly spaced between those of σ_max and σ_min (= Uniform unless σ's are overridden)."""
    return append_zero(model.t_to_sigma(_timesteps_between(model, settings, steps)))


def ddim_uniform(
    steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS
) -> torch.Tensor:
    """The DDIM timesteps: every (T // steps)-th step, offset by one, as CompVis/A1111 do. Capped at
    `steps` values: A1111 1.10's "DDIM" schedule keeps striding up to T, which yields more σ's than
    steps when T is not a multiple of steps (7 for 6 steps, 167 for 150)."""
    total = len(model.sigmas)
    stride = max(total // steps, 1)
    timesteps = torch.arange(0, total, stride)[:steps] + 1
    timesteps = timesteps.clamp(max=total - 1).flip(0)
    return append_zero(model.sigmas[timesteps])


def _betainc_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), the Beta(a, b) distribution's CDF."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):  # the fraction converges fast on this side; use symmetry otherwise
        return math.exp(log_front) * _betainc_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betainc_fraction(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of `beta_cdf` by bisection (the CDF is monotone; 100 halvings reach float precision)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(100):
        mid = (low + high) / 2
        if beta_cdf(mid, a, b) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def beta(steps: int, model: ModelSigmas, settings: ScheduleSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Lee et al. (2024), "Beta Sampling is All You Need", as A1111 1.10 applies it: Beta(α, β)
    quantiles of evenly spaced levels, mapped linearly onto [σ_min, σ_max]. α = β = 0.6 puts more
    steps at both ends of the range."""
    low, high = settings.sigma_range(model)
    levels = 1 - np.linspace(0, 1, steps)
    sigmas = [
        low + beta_ppf(float(q), settings.beta_alpha, settings.beta_beta) * (high - low) for q in levels
    ]
    return append_zero(torch.tensor(sigmas, dtype=torch.float32))


# -- samplers' own discretizations ("Automatic" for UniPC and LCM, as in A1111) --------------------
def unipc_sigmas(steps: int, model: ModelSigmas, options: SamplerOptions) -> torch.Tensor:
    """UniPC's `skip_type` grid over continuous time t ∈ [1/T, 1] (model timestep T·t − 1): steps+1
    points ending at σ_min (A1111 runs UniPC this way and decodes x at σ_min)."""
    total = len(model.sigmas)
    t_first, t_last = 1.0, 1.0 / total
    if options.uni_pc_skip_type == "logSNR":
        logs = torch.linspace(
            math.log(model.sigma_max), math.log(model.sigma_min), steps + 1, dtype=torch.float64
        )
        return logs.exp().float()
    if options.uni_pc_skip_type == "time_quadratic":
        t = torch.linspace(math.sqrt(t_first), math.sqrt(t_last), steps + 1, dtype=torch.float64) ** 2
    else:
        t = torch.linspace(t_first, t_last, steps + 1, dtype=torch.float64)
    return model.t_to_sigma((t * total - 1).float())


def lcm_sigmas(steps: int, model: ModelSigmas, options: SamplerOptions) -> torch.Tensor:
    """A1111's LCM discretization: the 50 "original" LCM timesteps (every T/50-th, ending at T/50 − 1),
    with σ's interpolated evenly over that table."""
    skip = max(len(model.sigmas) // 50, 1)
    table = ModelSigmas(model.sigmas[skip - 1 :: skip])
    return append_zero(table.t_to_sigma(torch.linspace(len(table.sigmas) - 1, 0, steps)))


# name, function, A1111's lowercase id (accepted as an alias), more aliases — in A1111's dropdown order
SCHEDULE_TABLE = [
    ("Uniform", uniform, "uniform", ()),
    ("Karras", karras, "karras", ()),
    ("Exponential", exponential, "exponential", ()),
    ("Polyexponential", polyexponential, "polyexponential", ()),
    ("SGM Uniform", sgm_uniform, "sgm_uniform", ("SGMUniform",)),
    ("KL Optimal", kl_optimal, "kl_optimal", ()),
    ("Align Your Steps", align_your_steps, "align_your_steps", ()),
    ("Simple", simple, "simple", ()),
    ("Normal", normal, "normal", ()),
    ("DDIM", ddim_uniform, "ddim_uniform", ("ddim",)),
    ("Beta", beta, "beta", ()),
]
