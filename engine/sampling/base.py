"""What every σ-space sampler shares: its options, the step report, the noise it may draw, and the
small formulas several samplers reuse (the ODE derivative, the ancestral split, Karras' churn).

Kept apart from `samplers.py` (the registration table) so that each family module can import these
without importing the table that imports the families.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]

# The schedule type that means "the sampler's own default" (A1111's name, shown in the dropdown).
AUTOMATIC = "Automatic"

UNI_PC_VARIANTS = ("bh1", "bh2", "vary_coeff")
UNI_PC_SKIP_TYPES = ("time_uniform", "time_quadratic", "logSNR")


@dataclass(frozen=True)
class SamplerOptions:
    """A1111's sampler parameters ("Sampler parameters" settings), with A1111's defaults. These
    defaults are the only ones: the Settings / infotext table (`engine.schema.sampler_params`)
    reads them from here.

    Zero means "the default" where A1111 uses that convention: σ_min / σ_max / ρ = 0 take the model's or
    the schedule's own value, and s_tmax = 0 means infinity.
    """

    eta_ancestral: float = 1.0  # "Eta" of ancestral and SDE samplers (A1111 `eta_ancestral`)
    eta_ddim: float = 0.0  # "Eta" of DDIM / DDIM CFG++ (A1111 `eta_ddim`)
    s_churn: float = 0.0  # Karras et al. 2022 S_churn (Euler, Heun, DPM2)
    s_tmin: float = 0.0  # churn only where s_tmin <= σ <= s_tmax
    s_tmax: float = 0.0  # 0 = no upper limit (infinity), as in A1111's settings
    # Scales fresh noise where A1111 passes it: churn (Euler, Heun, DPM2), DPM2 a, DPM++ 2S a, DPM++ SDE,
    # DPM++ 2M SDE (+ Heun), DPM++ 3M SDE, DPM fast. Euler a, DDIM, Restart, DPM adaptive, LCM ignore it.
    s_noise: float = 1.0
    sigma_min: float = 0.0  # schedule σ_min override (0 = the model's)
    sigma_max: float = 0.0  # schedule σ_max override (0 = the model's)
    rho: float = 0.0  # Karras / Polyexponential ρ override (0 = the schedule's: 7 / 1)
    always_discard_next_to_last_sigma: bool = False
    uni_pc_variant: str = "bh1"
    uni_pc_skip_type: str = "time_uniform"
    uni_pc_order: int = 3
    uni_pc_lower_order_final: bool = True
    beta_dist_alpha: float = 0.6
    beta_dist_beta: float = 0.6
    shift: float = 0.0  # a flow model's σ-schedule shift (SD 3, Flux); 0 = the model's own
    eta_noise_seed_delta: int = 0  # ENSD: noise after the initial latent uses seed + delta
    # Guidance skips (A1111's "Ignore negative prompt during early sampling" and "Negative Guidance
    # minimum sigma"): read by CFGGuider, not by the samplers. On a skipped evaluation the model runs
    # on the prompt alone (CFG scale 1), which also saves the unconditional half of the batch.
    skip_early_cond: float = 0.0  # no CFG on steps with step / steps <= this fraction (0 = none)
    s_min_uncond: float = 0.0  # NGMS: no CFG where σ < this (0 = never) ...
    s_min_uncond_all: bool = False  # ... on every other step, as A1111, or on all steps with this

    def __post_init__(self) -> None:
        for name in ("eta_ancestral", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value}")
        if not 0 <= self.skip_early_cond <= 1:  # also rejects NaN
            raise ValueError(f"skip_early_cond must be a fraction from 0 to 1, got {self.skip_early_cond}")
        for name in ("sigma_min", "sigma_max", "rho", "s_min_uncond", "shift"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 (0 = default), got {value}")
        if self.sigma_min and self.sigma_max and self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        if self.uni_pc_variant not in UNI_PC_VARIANTS:
            raise ValueError(f"uni_pc_variant must be one of {UNI_PC_VARIANTS}, got {self.uni_pc_variant!r}")
        if self.uni_pc_skip_type not in UNI_PC_SKIP_TYPES:
            raise ValueError(
                f"uni_pc_skip_type must be one of {UNI_PC_SKIP_TYPES}, got {self.uni_pc_skip_type!r}"
            )
        if not 1 <= self.uni_pc_order <= 50:
            raise ValueError(f"uni_pc_order must be between 1 and 50, got {self.uni_pc_order}")
        for name in ("beta_dist_alpha", "beta_dist_beta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")

    @property
    def churn_tmax(self) -> float:
        return self.s_tmax or math.inf


@dataclass(frozen=True)
class StepInfo:
    step: int  # 0-based index of the step just finished
    total: int
    x: torch.Tensor
    denoised: torch.Tensor
    sigma: float


StepCallback = Callable[[StepInfo], None]


@runtime_checkable
class BrownianNoise(Protocol):
    """A noise source that also offers Brownian increments (engine.pipeline.rng.ImageRNG is one).

    `brownian(σ, σ_next)` is (W(σ_next) − W(σ)) / sqrt|σ_next − σ| for a fixed Brownian path W per image:
    N(0, I) like fresh noise, but increments over overlapping σ-intervals are correlated the way SDE
    solvers assume, and the path does not depend on the step count or the batch.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def brownian(self, sigma: float, sigma_next: float) -> torch.Tensor: ...


def brownian_sampler(noise: NoiseFn, x: torch.Tensor) -> Callable[[float, float], torch.Tensor]:
    """(σ, σ_next) → N(0, I) noise for SDE samplers: the Brownian increment when the noise source has
    per-image paths, otherwise fresh noise (k-diffusion's default noise sampler does the same)."""
    if isinstance(noise, BrownianNoise):
        return lambda sigma, sigma_next: noise.brownian(sigma, sigma_next).to(x.device, x.dtype)
    return lambda sigma, sigma_next: noise(x)


def report(callback: StepCallback | None, step: int, total: int, x, denoised, sigma) -> None:
    if callback is not None:
        callback(StepInfo(step, total, x, denoised, float(sigma)))


def sigma_like(sigmas: torch.Tensor, value: float) -> torch.Tensor:
    """A σ off the schedule (a midpoint, a churned σ̂) as a tensor the denoiser accepts."""
    return sigmas.new_tensor(value)


def to_d(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's derivative dx/dσ = (x − x̂₀) / σ."""
    return (x - denoised) / sigma


@dataclass(frozen=True)
class NoiseSpace:
    """How a model's noisy latents are made: x = α(σ)·x₀ + σ·ε.

    - `VE` (k-diffusion's variable for ε- and v-prediction models, x = x_VP / sqrt(ᾱ)): α = 1.
    - `FLOW` (rectified flow: SD 3, Flux): α = 1 − σ, σ ∈ (0, 1]; σ = 1 is pure noise.

    The probability-flow ODE has the same form in both, dx/dσ = (x − x̂₀)/σ (for a flow model
    x − x̂₀ = σ·v, and the velocity v = ε − x₀ is dx/dσ), so the deterministic samplers run
    unchanged. What differs is fresh noise: adding it must also shrink the signal by α, and the
    stochastic samplers' exponential integrators run in the half log-SNR λ = log(α/σ) with their
    x̂₀ terms scaled by α (DPM-Solver++'s general form; k-diffusion's VE code is its α = 1 case).
    The methods keep VE arithmetic exactly as it was (α = 1.0 multiplies exactly), so VE pictures
    do not change. A flow σ maps to the equivalent VE σ as σ/α (`from_ve` is the way back).
    """

    name: str
    flow: bool

    def alpha(self, sigma: float) -> float:
        return 1.0 - sigma if self.flow else 1.0

    @property
    def sigma_ceiling(self) -> float:
        """The largest σ there is (pure noise): churn and restarts never lift σ above it."""
        return 1.0 if self.flow else math.inf

    def half_log_snr(self, sigma: float) -> float:
        """λ = log(α/σ); −∞ at pure noise (a flow model's σ = 1), +∞ at σ = 0."""
        alpha = self.alpha(sigma)
        if alpha <= 0 or sigma <= 0:
            return -math.inf if alpha <= 0 else math.inf
        return math.log(alpha) - math.log(sigma)

    def sigma_at(self, half_log_snr: float) -> float:
        """The σ whose λ is `half_log_snr` (the inverse of `half_log_snr`)."""
        if self.flow:
            return 1 / (1 + math.exp(half_log_snr))
        return math.exp(-half_log_snr)

    def between(self, sigma: float, sigma_to: float, r: float) -> float:
        """The σ a fraction `r` of the way from σ to σ_to in λ (where single-step solvers take their
        extra model call). From pure noise λ is −∞, and the point is taken in σ instead."""
        lam = self.half_log_snr(sigma)
        if math.isinf(lam):
            return sigma + r * (sigma_to - sigma)
        return self.sigma_at(lam + r * (self.half_log_snr(sigma_to) - lam))

    def from_ve(self, sigma_ve: float) -> float:
        return sigma_ve / (1 + sigma_ve) if self.flow else sigma_ve

    def ancestral_step(self, sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
        """(σ_down, σ_up): go deterministically to σ_down, then `renoise` to σ_next with noise of std
        σ_up. A flow model steps down by σ_down = σ_next·(1 + (σ_next/σ − 1)·η), ComfyUI's rule for
        flow models (its "RF" ancestral samplers): it never drops to 0 from pure noise, where the
        VE rule would throw the whole latent away at η = 1."""
        if not self.flow:
            return ancestral_step(sigma, sigma_next, eta)
        if not eta or sigma_next == 0.0:
            return sigma_next, 0.0
        sigma_down = max(sigma_next * (1 + (sigma_next / sigma - 1) * eta), 0.0)
        return sigma_down, self.noise_std(sigma_down, sigma_next)

    def renoise(
        self, x: torch.Tensor, noise: torch.Tensor, sigma_down: float, sigma_next: float, sigma_up: float
    ) -> torch.Tensor:
        """x at σ_down brought to σ_next with `noise` (N(0, I), maybe scaled by s_noise) of std σ_up
        (from `ancestral_step`, or `noise_std`)."""
        if not self.flow:
            return x + noise * sigma_up
        return x * (self.alpha(sigma_next) / self.alpha(sigma_down)) + noise * sigma_up

    def noise_std(self, sigma: float, sigma_to: float) -> float:
        """The std of fresh noise that takes x from σ up to σ_to > σ (churn, restarts)."""
        if not self.flow:
            return math.sqrt(sigma_to**2 - sigma**2)
        kept = self.alpha(sigma_to) * sigma / self.alpha(sigma)  # the noise x already holds, scaled
        return math.sqrt(max(sigma_to**2 - kept**2, 0.0))

    def lift(self, x: torch.Tensor, noise: torch.Tensor, sigma: float, sigma_to: float) -> torch.Tensor:
        """x at σ raised to σ_to > σ by adding `noise` (churn, restarts)."""
        return self.renoise(x, noise, sigma, sigma_to, self.noise_std(sigma, sigma_to))

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """A clean latent x₀ at noise level σ (img2img's start, inpainting's kept area)."""
        if not self.flow:
            return x0 + noise * sigma
        return x0 * self.alpha(sigma) + noise * sigma


VE = NoiseSpace("VE", flow=False)
FLOW = NoiseSpace("flow", flow=True)


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """Split a step to σ_next into a deterministic part to σ_down plus fresh noise of std σ_up, so that
    the marginal variance at σ_next is right. η = 1 is the DDPM posterior; η = 0 no noise at all."""
    if not eta or sigma_next == 0.0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
    return sigma_down, sigma_up


def churn(x: torch.Tensor, sigma: float, steps: int, noise: NoiseFn, opts: SamplerOptions, space=VE):
    """Karras et al. 2022, Algorithm 2: raise σ to σ̂ = σ(1 + γ) by adding noise before the step
    (never above pure noise). Returns (x, σ̂); with the default s_churn = 0 it returns its inputs
    and draws nothing."""
    gamma = 0.0
    if opts.s_churn > 0 and opts.s_tmin <= sigma <= opts.churn_tmax:
        gamma = min(opts.s_churn / steps, math.sqrt(2) - 1)
    sigma_hat = min(sigma * (1 + gamma), space.sigma_ceiling)
    if gamma <= 0 or sigma_hat <= sigma:
        return x, sigma
    return space.lift(x, noise(x) * opts.s_noise, sigma, sigma_hat), sigma_hat
