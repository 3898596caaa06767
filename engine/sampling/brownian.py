"""A Brownian path W(t), t ≥ 0, that is a deterministic function of a seed (a "Brownian tree").

SDE samplers need noise for overlapping σ-intervals that is correlated like increments of one
Brownian motion, and A1111 wants it reproducible per image and independent of the batch. Storing a
path is impossible, so W is generated on demand by recursive bisection (Lévy's construction): the
value at the midpoint of [a, b] given W(a), W(b) is (W(a) + W(b))/2 + sqrt(b − a)/2 · z, and each z
comes from its own generator seeded by a hash of (seed, node). Any W(t) is thus the same no matter
which other points were asked for, or in which order.

Layout: W(1) ~ N(0, 1) and W(2^k) − W(2^(k−1)) ~ N(0, 2^(k−1)) for k ≥ 1 ("octaves"); inside an
octave, or inside [0, 1], bisection stops once the interval is shorter than t·2^−RELATIVE_DEPTH, and
the rest is linear interpolation (the variance it omits is below 1e-9 of t). Written here rather than
taken from torchsde to draw on the CPU with per-node seeds: identical on every device.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch

RELATIVE_DEPTH = 30
_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (SplitMix64's finalizer, chained): well-spread generator seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 31
    return state


class BrownianPath:
    """W(t) for one image: shape `shape`, float32 on the CPU."""

    def __init__(self, seed: int, shape: tuple[int, ...], cache_size: int = 8):
        self.seed, self.shape = seed, tuple(shape)
        self._cache: OrderedDict[float, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        # One generator, reseeded per node: the same numbers as a fresh generator per node, without
        # building one ~35 times per query (a query is most of an SDE sampler's own time per step).
        self._generator = torch.Generator()
        self._octaves: list[np.ndarray] = []  # W(1), W(2), W(4), …: every query starts from two

    def _normal(self, *node: int) -> np.ndarray:
        # Drawn by torch (the generator fixes the numbers); the arithmetic on these small arrays is
        # numpy's, whose per-call cost is a fraction of torch's. Each operation is one correctly
        # rounded float32 operation in both, so the values are bit-for-bit torch's (pinned in tests).
        self._generator.manual_seed(_mix(self.seed, *node))
        return torch.randn(self.shape, generator=self._generator, dtype=torch.float32).numpy()

    def _octave_end(self, k: int) -> np.ndarray:
        """W(2^k), k ≥ 0, built once per path."""
        while len(self._octaves) <= k:
            j = len(self._octaves)
            if j == 0:
                self._octaves.append(self._normal(0, 0, 0))
            else:
                self._octaves.append(
                    self._octaves[-1] + np.float32(math.sqrt(2.0 ** (j - 1))) * self._normal(j, 0, 0)
                )
        return self._octaves[k]

    def _octave(self, t: float) -> tuple[int, float, float, np.ndarray, np.ndarray]:
        """(octave k, a, b, W(a), W(b)) with t in (a, b]: [0, 1] is octave 0, (2^(k−1), 2^k] octave k."""
        if t <= 1.0:
            return 0, 0.0, 1.0, np.zeros(self.shape, np.float32), self._octave_end(0)
        k = math.ceil(math.log2(t))
        while 2.0 ** (k - 1) >= t:  # guard against log2 rounding at powers of two
            k -= 1
        while 2.0**k < t:
            k += 1
        return k, 2.0 ** (k - 1), 2.0**k, self._octave_end(k - 1), self._octave_end(k)

    def __call__(self, t: float) -> torch.Tensor:
        t = float(t)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"Brownian path queried at t = {t}")
        if t == 0.0:
            return torch.zeros(self.shape)
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        octave, a, b, w_a, w_b = self._octave(t)
        level, index = 0, 0
        tolerance = t * 2.0**-RELATIVE_DEPTH
        while b - a > tolerance:
            mid = (a + b) / 2
            # (w_a + w_b) / 2 + sqrt(b − a) / 2 · z, in place (the same operations in the same order).
            z = self._normal(octave, level + 1, index + 1)
            z *= np.float32(math.sqrt(b - a) / 2)
            w_mid = np.add(w_a, w_b)
            w_mid /= np.float32(2)
            w_mid += z
            level, index = level + 1, 2 * index
            if t <= mid:
                b, w_b = mid, w_mid
            else:
                a, w_a, index = mid, w_mid, index + 1
            if t == a or t == b:
                break
        if t in (a, b):
            value = torch.from_numpy(w_a if t == a else w_b)
        else:
            value = torch.from_numpy(w_a + (w_b - w_a) * np.float32((t - a) / (b - a)))
        self._cache[t] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def increment(self, sigma: float, sigma_next: float) -> torch.Tensor:
        """(W(σ_next) − W(σ)) / sqrt|σ_next − σ|: standard normal noise for the step σ → σ_next."""
        sigma, sigma_next = float(sigma), float(sigma_next)
        if sigma == sigma_next:  # no time passes: no noise (and no division by zero)
            return torch.zeros(self.shape)
        return (self(sigma_next) - self(sigma)) / math.sqrt(abs(sigma_next - sigma))
