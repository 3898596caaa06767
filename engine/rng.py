"""Seeded noise, one generator per image (A1111's "RNG: CPU").

Noise is drawn on the CPU from a generator seeded with the image's own seed and then moved to the
device, so a seed gives the same picture on any device and image i of a batch equals a single run
with seed + i. Ancestral samplers draw their per-step noise from the same per-image generators; SDE
samplers draw Brownian increments from a per-image Brownian path seeded with the image's seed.
"""

from __future__ import annotations

import random

import torch

from engine.params import MAX_SEED
from engine.sampling.brownian import BrownianPath


def resolve_seed(seed: int) -> int:
    """-1 means "pick one at random" (A1111); any other value is kept."""
    return random.randint(0, MAX_SEED) if seed == -1 else seed


class ImageRNG:
    """Per-image CPU generators producing batched noise of one latent shape.

    Called like a function it is the samplers' `noise(x)`; `brownian(σ, σ_next)` serves SDE samplers
    (see `engine.sampling.base.BrownianNoise`).
    """

    def __init__(self, seeds: list[int], shape: tuple[int, ...], device: torch.device):
        self.seeds = list(seeds)
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self.shape, self.device = shape, device
        self._paths: list[BrownianPath] | None = None

    def next(self) -> torch.Tensor:
        noise = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(noise).to(self.device)

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
