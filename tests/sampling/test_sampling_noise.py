"""The noise SDE samplers draw: per-image Brownian paths (engine.sampling.brownian) served by ImageRNG,
and A1111's eta noise seed delta."""

from __future__ import annotations

import math

import pytest
import torch

from engine.pipeline.rng import ImageRNG
from engine.sampling.base import BrownianNoise
from engine.sampling.brownian import BrownianPath

SHAPE = (20000,)


def test_path_values_do_not_depend_on_what_was_asked_before():
    fresh = BrownianPath(5, (16,))
    warmed = BrownianPath(5, (16,))
    for t in (14.6, 0.03, 3.0, 0.7, 2.0, 1.0, 9.99):
        warmed(t)
    for t in (0.0292, 0.5, 1.0, 2.0, 7.3, 14.6, 100.0):
        assert torch.equal(fresh(t), warmed(t)), t
    assert torch.equal(BrownianPath(5, (16,))(0.0), torch.zeros(16))
    assert not torch.equal(BrownianPath(6, (16,))(0.5), fresh(0.5))


@pytest.mark.parametrize("t", [0.0292, 0.5, 3.0, 14.6])
def test_path_has_variance_t(t):
    w = BrownianPath(1, SHAPE)(t)
    assert abs(float(w.var()) / t - 1) < 0.03
    assert abs(float(w.mean())) < 4 * math.sqrt(t / SHAPE[0])


@pytest.mark.parametrize(("sigma", "sigma_next"), [(14.6, 10.0), (1.3, 1.2), (0.0301, 0.0292), (2.0, 1e-3)])
def test_increments_are_standard_normal(sigma, sigma_next):
    z = BrownianPath(2, SHAPE).increment(sigma, sigma_next)
    assert abs(float(z.std()) - 1) < 0.02
    assert abs(float(z.mean())) < 0.02


def test_increments_correlate_like_brownian_motion():
    path = BrownianPath(3, SHAPE)
    disjoint = torch.corrcoef(torch.stack([path.increment(2.0, 1.0), path.increment(1.0, 0.5)]))[0, 1]
    assert abs(float(disjoint)) < 0.02
    # [σ, σ_mid] inside [σ, σ_next]: correlation sqrt(len_small / len_big), what DPM++ SDE relies on.
    nested = torch.corrcoef(torch.stack([path.increment(2.0, 1.5), path.increment(2.0, 1.0)]))[0, 1]
    assert abs(float(nested) - math.sqrt(0.5)) < 0.02
    whole = path(2.0) - path(0.5)
    assert torch.allclose(whole, (path(2.0) - path(1.0)) + (path(1.0) - path(0.5)), atol=1e-5)


def test_image_rng_serves_one_path_per_image_seed():
    batch = ImageRNG([11, 12], (4, 8, 8), torch.device("cpu"))
    assert isinstance(batch, BrownianNoise)
    alone = [ImageRNG([s], (4, 8, 8), torch.device("cpu")) for s in (11, 12)]
    pair = batch.brownian(14.6, 3.0)
    assert pair.shape == (2, 4, 8, 8)
    for i, rng in enumerate(alone):
        assert torch.equal(pair[i], rng.brownian(14.6, 3.0)[0])


def test_image_rng_is_the_samplers_noise_callable():
    a, b = ImageRNG([3], (4,), torch.device("cpu")), ImageRNG([3], (4,), torch.device("cpu"))
    x = torch.zeros(1, 4, dtype=torch.float64)
    assert torch.equal(a(x), b.like(x)) and a(x).dtype == torch.float64


def test_eta_noise_seed_delta_reseeds_only_the_sampler_noise():
    plain = ImageRNG([100], (8,), torch.device("cpu"))
    shifted = ImageRNG([100], (8,), torch.device("cpu"))
    assert torch.equal(plain.next(), shifted.next())  # the initial latent is the seed's
    shifted.apply_noise_seed_delta(31337)
    assert torch.equal(shifted.next(), ImageRNG([100 + 31337], (8,), torch.device("cpu")).next())
    assert not torch.equal(plain.next(), ImageRNG([100 + 31337], (8,), torch.device("cpu")).next())
    same = ImageRNG([100], (8,), torch.device("cpu"))
    same.next()
    same.apply_noise_seed_delta(0)  # 0 = off: the stream continues
    assert torch.equal(same.next(), plain_second())


def plain_second() -> torch.Tensor:
    rng = ImageRNG([100], (8,), torch.device("cpu"))
    rng.next()
    return rng.next()


# W(t) of BrownianPath(7, (2, 3)) as first written (a fresh generator per node, no cached octaves):
# a seed's SDE pictures stay the same through rewrites of the path for speed.
PINNED = {
    0.03: [0.02429977059364319, -0.42285531759262085, -0.068362295627594, -0.28982681035995483,
           -0.09774113446474075, 0.295775443315506],
    0.7: [-0.8508155941963196, 0.860753059387207, 0.888968825340271, -0.27358582615852356,
          -1.6344941854476929, 1.7420878410339355],
    3.0: [-1.2917245626449585, 0.6306662559509277, -0.7693955898284912, -0.791854202747345,
          -3.9906961917877197, 0.9861396551132202],
    14.614641: [0.09246302396059036, -2.594043254852295, 4.213466167449951, -3.589015483856201,
                -12.553873062133789, -2.240457057952881],
}  # fmt: skip


def test_path_values_are_pinned():
    path = BrownianPath(7, (2, 3))
    for t, values in PINNED.items():
        assert path(t).flatten().tolist() == values, t
