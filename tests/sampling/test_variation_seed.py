"""A1111's variation seed on tiny seeded components: strength 0 changes nothing, strength 1 is the
variation seed's own picture, values between move from one to the other, and the infotext keys
round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.loaders import load_checkpoint
from engine.models.registry import scan_folder
from engine.pipeline.rng import ImageRNG, slerp
from engine.pipeline.txt2img import txt2img
from engine.schema.infotext import params_from_infotext, parse_infotext
from engine.schema.params import GenerationParams


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    (info,) = [i for i in scan_folder(tiny_diffusers_dir.parent) if i.path == tiny_diffusers_dir]
    return load_checkpoint(info, "cpu", torch.float32, torch.float32)


def picture(model, **kw) -> np.ndarray:
    base = dict(prompt="a red circle", steps=4, sampler_name="Euler", seed=11, width=64, height=64)
    result = txt2img(model, GenerationParams(**{**base, **kw}))
    return np.asarray(result.images[0], dtype=np.int16), result


def test_strength_moves_from_the_seed_to_the_variation_seed(model):
    plain, _ = picture(model)
    other, _ = picture(model, seed=99)
    zero, zero_result = picture(model, subseed=99, subseed_strength=0.0)
    full, _ = picture(model, subseed=99, subseed_strength=1.0)
    half, _ = picture(model, subseed=99, subseed_strength=0.5)
    assert np.array_equal(zero, plain) and "Variation seed" not in zero_result.infotexts[0]
    assert np.abs(full - other).max() <= 1  # all the way: the variation seed's picture (Euler: no new noise)
    assert np.abs(half - plain).mean() > 1 and np.abs(half - other).mean() > 1


def test_infotext_keys_round_trip_and_minus_one_is_resolved(model):
    _, result = picture(model, subseed=-1, subseed_strength=0.3)
    info = parse_infotext(result.infotexts[0])
    assert info["Variation seed strength"] == "0.3" and int(info["Variation seed"]) >= 0
    params, unknown = params_from_infotext(result.infotexts[0])
    assert (params.subseed, params.subseed_strength) == (int(info["Variation seed"]), 0.3)
    assert "Variation seed" not in unknown and "Variation seed strength" not in unknown


def test_every_image_of_a_batch_shares_the_variation_seed():
    rng = ImageRNG([1, 2], (4, 8, 8), torch.device("cpu"), subseed=5, subseed_strength=1.0)
    noise = rng.next()
    expected = torch.randn((4, 8, 8), generator=torch.Generator("cpu").manual_seed(5))
    assert torch.allclose(noise[0], expected, atol=1e-5) and torch.allclose(noise[1], expected, atol=1e-5)
    later = rng.next()  # only the first draw varies: the sampler's noise is each seed's own
    own = torch.Generator("cpu").manual_seed(1)
    torch.randn((4, 8, 8), generator=own)
    assert torch.equal(later[0], torch.randn((4, 8, 8), generator=own))


def test_slerp_keeps_the_norm_of_noise():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16)
    mid = slerp(0.5, a, b)
    assert torch.allclose(mid.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1), rtol=0.05)
    assert torch.allclose(slerp(0.0, a, b), a, atol=1e-5) and torch.allclose(slerp(1.0, a, b), b, atol=1e-5)
    assert torch.allclose(slerp(0.3, a, a), a, atol=1e-5)  # parallel inputs: no 0/0
