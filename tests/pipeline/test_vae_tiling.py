"""The VAE in strips (engine.pipeline.vae_tiling) equals the whole-picture pass, and the decode and
encode stages pick it when a picture would not fit or runs out of memory; NaN says which part failed.

Stated tolerance: strips differ from the whole pass by float rounding only, under 0.5/255 of a
pixel on the built-in model's trained VAE (measured: about 0.0002/255), so no seam can show.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from engine.models.types import VaePolicy
from engine.pipeline import latents as stage
from engine.pipeline import vae_tiling
from engine.pipeline.txt2img import txt2img
from engine.pipeline.vae_tiling import decode_in_strips, encode_in_strips
from engine.schema.params import GenerationParams
from tests.fakes.vaes import builtin_vae

HALF_A_LEVEL = 0.5 / 255 * 2  # in the VAE's [-1, 1] units
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vae():
    return builtin_vae()


def scene(height: int = 136, width: int = 200) -> torch.Tensor:
    """A picture with edges, gradients and texture, in [-1, 1], not a multiple of a strip in size."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    picture = torch.stack([xs, ys, 1 - xs * ys])
    disc = ((xs - 0.4) ** 2 + (ys - 0.5) ** 2).sqrt() < 0.25
    picture[:, disc] = torch.tensor([0.9, 0.2, 0.1])[:, None]
    picture += 0.05 * torch.rand(picture.shape, generator=generator)
    return (picture.clamp(0, 1) * 2 - 1)[None]


@pytest.fixture
def small_strips(monkeypatch):
    """Strips of 24² px at every layer: many strip borders even on a small picture."""
    monkeypatch.setattr(vae_tiling, "STRIP_PIXELS", 24 * 24)


def test_decode_in_strips_equals_the_whole_pass(vae, small_strips):
    with torch.no_grad():
        z = vae.encode(scene()).latent_dist.mean
        whole = vae.decode(z).sample
    strips = decode_in_strips(vae, z, CPU)
    assert strips.shape == whole.shape == (1, 3, 136, 200)
    assert (strips - whole).abs().max() < HALF_A_LEVEL


def test_no_seam_at_strip_borders(vae, small_strips):
    """The change from one row to the next equals the whole pass's at every row, strip borders
    included (SD upscale's border test; at 24² px a strip is 2 rows of the 200 px wide picture)."""
    with torch.no_grad():
        z = vae.encode(scene()).latent_dist.mean
        whole = vae.decode(z).sample
    strips = decode_in_strips(vae, z, CPU)
    step_whole = (whole[..., 1:, :] - whole[..., :-1, :]).abs().amax(dim=(0, 1, 3))
    step_strips = (strips[..., 1:, :] - strips[..., :-1, :]).abs().amax(dim=(0, 1, 3))
    assert (step_strips - step_whole).abs().max() < 2 * HALF_A_LEVEL


def test_encode_in_strips_equals_the_whole_pass(vae, small_strips):
    picture = scene()
    with torch.no_grad():
        whole = vae.encode(picture).latent_dist.parameters
    strips = encode_in_strips(vae, picture, CPU)
    assert strips.shape == whole.shape
    assert (strips - whole).abs().max() < 1e-3


@pytest.fixture(scope="module")
def policies(builtin_model):
    """The built-in model under each tiling policy (copies sharing its modules)."""
    return {
        mode: dataclasses.replace(builtin_model, vae_policy=VaePolicy(mode)) for mode in ("always", "never")
    }


def test_every_policy_draws_the_same_picture(policies, small_strips):
    params = GenerationParams(
        prompt="a red circle", steps=4, width=192, height=128, seed=4, sampler_name="Euler"
    )
    drawn = {mode: np.asarray(txt2img(m, params).images[0], np.int16) for mode, m in policies.items()}
    assert np.abs(drawn["always"] - drawn["never"]).max() <= 1


def test_img2img_encode_is_the_same_in_strips(policies, small_strips):
    images = (scene() + 1) / 2
    always = stage.encode(policies["always"], images)
    never = stage.encode(policies["never"], images)
    assert (always - never).abs().max() < 1e-3


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")


def test_auto_runs_in_strips_after_an_out_of_memory(builtin_model, monkeypatch):
    z = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(1))
    expected = stage.decode(dataclasses.replace(builtin_model, vae_policy=VaePolicy("never")), z)
    model = dataclasses.replace(builtin_model, vae_policy=VaePolicy("auto"))
    monkeypatch.setattr(model.vae, "decode", _out_of_memory)
    notes: list[str] = []
    decoded = stage.decode(model, z, notes)
    assert (decoded - expected).abs().max() < 1 / 255
    assert any("ran out of memory" in note for note in notes)
    with pytest.raises(torch.OutOfMemoryError):  # "never" means never: the error stands
        stage.decode(dataclasses.replace(model, vae_policy=VaePolicy("never")), z)


def test_auto_runs_in_strips_when_the_picture_would_not_fit(builtin_model, monkeypatch):
    calls = []
    real = vae_tiling.decode_in_strips
    monkeypatch.setattr(vae_tiling, "decode_in_strips", lambda *a: calls.append(1) or real(*a))
    model = dataclasses.replace(builtin_model, vae_policy=VaePolicy("auto"))
    z = torch.zeros(1, 4, 16, 16)
    stage.decode(model, z)
    assert not calls  # 128² fits in any free memory
    monkeypatch.setattr(stage, "free_bytes", lambda device: 1024**2)  # 1 MiB free
    stage.decode(model, z)
    assert calls == [1]


def test_nan_latents_are_the_unets_failure(builtin_model):
    z = torch.zeros(1, 4, 16, 16)
    z[0, 0, 3, 3] = math.nan
    with pytest.raises(ValueError, match="The UNet produced NaN"):
        stage.decode(builtin_model, z)


def test_a_vae_that_gives_nan_in_fp32_is_named(builtin_model, monkeypatch):
    model = dataclasses.replace(builtin_model, vae_policy=VaePolicy("never"))

    class Broken:
        def __init__(self, sample):
            self.sample = sample

    monkeypatch.setattr(model.vae, "decode", lambda z: Broken(torch.full((1, 3, 128, 128), math.nan)))
    with pytest.raises(ValueError, match="The VAE produced NaN even in fp32"):
        stage.decode(model, torch.zeros(1, 4, 16, 16))


def test_a_half_precision_encode_that_overflows_falls_back_to_fp32(tiny_diffusers_dir):
    from tests.fakes.tiny_models import load_tiny

    model = load_tiny(tiny_diffusers_dir, vae_dtype=torch.float16)
    real_encode = model.vae.encode

    def encode(x, *args, **kwargs):
        out = real_encode(x, *args, **kwargs)
        if x.dtype == torch.float16:  # an fp16 overflow in the encoder
            out.latent_dist.parameters = torch.full_like(out.latent_dist.parameters, math.inf)
        return out

    model.vae.encode = encode
    notes: list[str] = []
    z = stage.encode(model, torch.rand(1, 3, 64, 64), notes)
    assert torch.isfinite(z).all() and model.vae_dtype == torch.float32
    assert any("fp32" in note for note in notes)
