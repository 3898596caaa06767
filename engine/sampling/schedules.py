"""σ schedules: each turns (steps, model discretization) into a descending σ sequence ending in 0.

Written here rather than taken from a library because the A1111 schedule types are defined over the
model's own discrete σ table (k-diffusion's `DiscreteSchedule`), which diffusers' schedulers do not
expose as pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.sampling.registry import register_schedule


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


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@register_schedule("Uniform", "uniform")
def uniform(steps: int, model: ModelSigmas) -> torch.Tensor:
    """Timesteps evenly spaced from T-1 to 0 (k-diffusion's `get_sigmas`, A1111's default)."""
    t = torch.linspace(len(model.sigmas) - 1, 0, steps)
    return append_zero(model.t_to_sigma(t))


@register_schedule("Karras", "karras")
def karras(steps: int, model: ModelSigmas, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: evenly spaced in σ^(1/ρ) between σ_max and σ_min."""
    ramp = torch.linspace(0, 1, steps)
    min_inv, max_inv = model.sigma_min ** (1 / rho), model.sigma_max ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


@register_schedule("Exponential", "exponential")
def exponential(steps: int, model: ModelSigmas) -> torch.Tensor:
    """Evenly spaced in log σ."""
    return append_zero(torch.linspace(math.log(model.sigma_max), math.log(model.sigma_min), steps).exp())


@register_schedule("DDIM", "ddim_uniform", aliases=("ddim",))
def ddim_uniform(steps: int, model: ModelSigmas) -> torch.Tensor:
    """The DDIM timesteps: every (T // steps)-th step, offset by one, as CompVis/A1111 do."""
    total = len(model.sigmas)
    stride = max(total // steps, 1)
    timesteps = torch.arange(0, total, stride)[:steps] + 1
    timesteps = timesteps.clamp(max=total - 1).flip(0)
    return append_zero(model.sigmas[timesteps])
