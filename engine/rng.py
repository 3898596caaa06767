"""Seeded noise, one generator per image (A1111's "RNG: CPU").

Noise is drawn on the CPU from a generator seeded with the image's own seed and then moved to the
device, so a seed gives the same picture on any device and image i of a batch equals a single run
with seed + i. Ancestral/SDE samplers draw their per-step noise from the same per-image generators.
"""

from __future__ import annotations

import random

import torch

from engine.params import MAX_SEED


def resolve_seed(seed: int) -> int:
    """-1 means "pick one at random" (A1111); any other value is kept."""
    return random.randint(0, MAX_SEED) if seed == -1 else seed


class ImageRNG:
    """Per-image CPU generators producing batched noise of one latent shape."""

    def __init__(self, seeds: list[int], shape: tuple[int, ...], device: torch.device):
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self.shape, self.device = shape, device

    def next(self) -> torch.Tensor:
        noise = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(noise).to(self.device)

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """Fresh noise shaped like x (the samplers' `noise` callable)."""
        return self.next().to(x.dtype)
