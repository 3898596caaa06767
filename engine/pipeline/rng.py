"""Seeded noise, one generator per image (A1111's "RNG: CPU").

Noise is drawn on the CPU from a generator seeded with the image's own seed and then moved to the
device, so a seed gives the same picture on any device and image i of a batch equals a single run
with seed + i. Ancestral samplers draw their per-step noise from the same per-image generators; SDE
samplers draw Brownian increments from a per-image Brownian path seeded with the image's seed.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from engine.sampling.brownian import BrownianPath
from engine.schema.params import MAX_SEED


def resolve_seed(seed: int) -> int:
    """-1 means "pick one at random" (A1111); any other value is kept."""
    return random.randint(0, MAX_SEED) if seed == -1 else seed


def resolve_seeds(params: Any) -> Any:
    """The params with the seed and, when variation is on, the variation seed resolved."""
    update = {"seed": resolve_seed(params.seed)}
    if params.subseed_strength > 0:
        update["subseed"] = resolve_seed(params.subseed)
    return params.model_copy(update=update)


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `a` (t=0) to `b` (t=1), per image (dim 0). Both are N(0, I)
    draws, so the result keeps their norm and stays noise the model expects, where a plain lerp
    would shrink it. Nearly parallel inputs fall back to the lerp (the slerp is 0/0 there)."""
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    cos = (flat_a / flat_a.norm(dim=1, keepdim=True) * flat_b / flat_b.norm(dim=1, keepdim=True)).sum(1)
    omega = torch.acos(cos.clamp(-1, 1))
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-4
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / torch.where(parallel, 1, sin))
    wb = torch.where(parallel, t, torch.sin(t * omega) / torch.where(parallel, 1, sin))
    shape = (-1,) + (1,) * (a.dim() - 1)
    return wa.reshape(shape) * a + wb.reshape(shape) * b


class ImageRNG:
    """Per-image CPU generators producing batched noise of one latent shape.

    Called like a function it is the samplers' `noise(x)`; `brownian(σ, σ_next)` serves SDE samplers
    (see `engine.sampling.base.BrownianNoise`).
    """

    def __init__(
        self,
        seeds: list[int],
        shape: tuple[int, ...],
        device: torch.device,
        subseed: int | None = None,
        subseed_strength: float = 0.0,
    ):
        self.seeds = list(seeds)
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self.shape, self.device = shape, device
        self._paths: list[BrownianPath] | None = None
        # A1111's variation seed: every image of the job shares it; only the first draw (the
        # initial noise) is moved towards it, the sampler's later noise is the seeds' own.
        self._variation = (
            (subseed, subseed_strength) if subseed is not None and subseed_strength > 0 else None
        )

    @classmethod
    def for_params(
        cls, params: Any, seeds: list[int], shape: tuple[int, ...], device: torch.device
    ) -> ImageRNG:
        """The job's noise source, with its variation seed when the strength is above 0."""
        return cls(seeds, shape, device, params.subseed, params.subseed_strength)

    def next(self) -> torch.Tensor:
        noise = torch.stack(
            [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        )
        if self._variation is not None:
            subseed, strength = self._variation
            self._variation = None
            varied = torch.randn(self.shape, generator=torch.Generator("cpu").manual_seed(subseed))
            noise = slerp(strength, noise, varied.expand_as(noise))
        return noise.to(self.device)

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """Fresh noise shaped like x (the samplers' `noise` callable)."""
        return self.next().to(x.dtype)

    __call__ = like

    def apply_noise_seed_delta(self, delta: int) -> None:
        """A1111's "Eta noise seed delta" (ENSD): once the initial latent is drawn, the sampler's noise
        comes from generators seeded with seed + delta. 0 keeps the current streams."""
        if delta:
            self.generators = [torch.Generator("cpu").manual_seed((s + delta) % 2**64) for s in self.seeds]

    def brownian(self, sigma: float, sigma_next: float) -> torch.Tensor:
        """N(0, I) Brownian increments over [σ_next, σ], one path per image seeded with its seed."""
        if self._paths is None:
            self._paths = [BrownianPath(seed, self.shape) for seed in self.seeds]
        return torch.stack([p.increment(sigma, sigma_next) for p in self._paths]).to(self.device)
