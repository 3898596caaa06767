"""Live previews without the VAE ("Approx cheap"): a linear latent → RGB map fitted to the model's
own VAE shows each picture recognisably, and the job's preview uses it (scaled to the picture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.pipeline import preview
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams
from engine.service.jobs import Job

CAPTIONS = (
    "a large red circle at the top left on a blue background",
    "a small green square at the bottom right on a yellow background",
    "a large purple triangle at the center on a white background",
)


@pytest.fixture(scope="module")
def drawn(builtin_model):
    """The built-in model's pictures of three captions, and their latents (encoded back)."""
    pictures = []
    for seed, caption in enumerate(CAPTIONS):
        job = GenerationParams(
            prompt=caption, steps=12, width=128, height=128, seed=seed, sampler_name="Euler a"
        )
        image = txt2img(builtin_model, job).images[0]
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        with torch.no_grad():
            z = builtin_model.vae.encode(x * 2 - 1).latent_dist.mean * builtin_model.vae.config.scaling_factor
        pictures.append((torch.nn.functional.avg_pool2d(x, 8)[0].permute(1, 2, 0).numpy(), z))
    return pictures


def test_each_cheap_preview_shows_its_own_picture(builtin_model, drawn):
    previews = [np.asarray(preview.approx_cheap(builtin_model, z), np.float32) / 255 for _, z in drawn]
    assert previews[0].shape == (16, 16, 3)  # latent size, as A1111's
    for i, shown in enumerate(previews):
        errors = [np.abs(shown - small).mean() for small, _ in drawn]
        assert errors[i] < 0.2 and errors[i] == min(errors), errors


def test_the_map_is_fitted_once_per_vae(builtin_model, drawn, monkeypatch):
    preview.approx_cheap(builtin_model, drawn[0][1])
    monkeypatch.setattr(preview, "fit", lambda *a: pytest.fail("fitted again"))
    preview.approx_cheap(builtin_model, drawn[1][1])


def test_the_colour_chart_has_flat_patches():
    chart, colours = preview.colour_chart()
    assert chart.shape == (1, 3, 5 * preview.PATCH, 12 * preview.PATCH) and len(colours) == 60
    assert torch.equal(chart[0, :, 0, 0], torch.tensor(colours[0], dtype=torch.float32))


@pytest.mark.parametrize("kind", [preview.APPROX_CHEAP, preview.FULL])
def test_a_job_previews_with_its_kind(builtin_model, kind):
    job = Job("txt2img", preview_every=2, preview_kind=kind)
    txt2img(
        builtin_model, GenerationParams(prompt=CAPTIONS[0], steps=4, width=128, height=128, seed=1), job=job
    )
    assert job.preview.size == (128, 128)  # the cheap one scaled up from its 16×16 latent pixels
