"""A1111's guidance skips: "Ignore negative prompt during early sampling" (Skip Early CFG) and
"Negative Guidance minimum sigma" (NGMS, every other step or all steps). On a skipped evaluation
the model runs on the prompt alone, with half the batch, and the result is CFG 1's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.conditioning.schedule import Conditioning, ScheduledCond
from engine.pipeline.txt2img import txt2img
from engine.sampling.denoiser import CFGGuider
from engine.schema.infotext import build_infotext, params_from_infotext
from engine.schema.params import GenerationParams
from tests.fakes.tiny_models import load_tiny
from tests.fakes.tiny_models import tiny_params as params

SIGMAS = torch.tensor([8.0, 6.0, 4.0, 2.0, 0.0])  # four steps


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


def _emb(value: float) -> torch.Tensor:
    return torch.full((1, 3, 4), float(value))


class _Denoiser:
    """x̂₀ = the row's conditioning value; records each call's batch size."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, x, sigma, cond):
        self.batches.append(x.shape[0])
        return torch.ones_like(x) * cond.hidden.mean(dim=(1, 2)).view(-1, 1)


def _run(**skips) -> tuple[list[float], list[int]]:
    """x̂₀ and the batch size at each step's σ for cond 1, uncond 0, CFG 7 (guided: 7, skipped: 1)."""
    denoiser = _Denoiser()
    guider = CFGGuider.plain(denoiser, _emb(1), _emb(0), 7.0, sigmas=SIGMAS, **skips)
    x = torch.zeros(1, 2)
    return [float(guider(x, s)[0, 0]) for s in SIGMAS[:-1]], denoiser.batches


def test_no_skip_by_default():
    assert _run() == ([7.0] * 4, [2] * 4)


def test_skip_early_cond_is_a_fraction_of_the_steps():
    # A1111: skip where step / steps <= fraction; steps 0 and 1 of 4 at 0.25
    assert _run(skip_early_cond=0.25) == ([1.0, 1.0, 7.0, 7.0], [1, 1, 2, 2])
    assert _run(skip_early_cond=1.0)[0] == [1.0] * 4


def test_ngms_skips_odd_steps_below_its_sigma_or_all_of_them():
    # σ < 5 at steps 2 (σ 4) and 3 (σ 2); A1111 skips only the odd one unless "all steps"
    assert _run(s_min_uncond=5.0) == ([7.0, 7.0, 7.0, 1.0], [2, 2, 2, 1])
    assert _run(s_min_uncond=5.0, s_min_uncond_all=True) == ([7.0, 7.0, 1.0, 1.0], [2, 2, 1, 1])
    # a sampler's second evaluation inside a step (σ 3, in step 2) follows its step
    guider = CFGGuider.plain(_Denoiser(), _emb(1), _emb(0), 7.0, sigmas=SIGMAS, s_min_uncond=5.0)
    assert float(guider(torch.zeros(1, 2), torch.tensor(3.0))[0, 0]) == 7.0


def test_a_skipped_and_prompt_lets_its_first_sub_prompt_stand_in_for_the_uncond():
    conditioning = Conditioning(
        ((ScheduledCond(((9, _emb(1.0)),)), 1.0), (ScheduledCond(((9, _emb(3.0)),)), 0.5)),
        ScheduledCond(((9, _emb(0.5)),)),
    )
    denoiser = _Denoiser()
    guider = CFGGuider(denoiser, conditioning, 7.0, sigmas=SIGMAS, skip_early_cond=1.0)
    guided, stand_in = guider.with_uncond(torch.zeros(2, 2), SIGMAS[0])
    assert torch.allclose(
        guided, torch.full((2, 2), 1.0 + 0.5 * (3.0 - 1.0))
    )  # A1111's combination at scale 1
    assert torch.allclose(stand_in, torch.ones(2, 2))
    assert denoiser.batches == [4]  # two sub-prompts × two images, no uncond rows


def test_step_based_skips_need_the_sigmas():
    with pytest.raises(ValueError, match="needs the sampler's sigmas"):
        CFGGuider.plain(_Denoiser(), _emb(1), _emb(0), 7.0, skip_early_cond=0.5)
    with pytest.raises(ValueError, match="needs the sampler's sigmas"):
        CFGGuider.plain(_Denoiser(), _emb(1), _emb(0), 7.0, s_min_uncond=1.0)
    CFGGuider.plain(_Denoiser(), _emb(1), _emb(0), 7.0, s_min_uncond=1.0, s_min_uncond_all=True)


@pytest.mark.parametrize("bad", [{"skip_early_cond": 1.5}, {"skip_early_cond": -0.1}, {"s_min_uncond": -1}])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ValueError):
        GenerationParams(**bad)


def test_skipping_every_step_paints_the_cfg_1_picture_and_says_so(model):  # noqa: F811
    cfg1 = txt2img(model, params(cfg_scale=1.0)).images[0]
    cfg7 = txt2img(model, params(cfg_scale=7.0)).images[0]
    ngms = txt2img(model, params(cfg_scale=7.0, s_min_uncond=100.0, s_min_uncond_all=True))
    early = txt2img(model, params(cfg_scale=7.0, skip_early_cond=1.0)).images[0]
    assert np.array_equal(np.asarray(ngms.images[0]), np.asarray(cfg1))
    assert np.array_equal(np.asarray(early), np.asarray(cfg1))
    assert not np.array_equal(np.asarray(cfg7), np.asarray(cfg1))
    text = ngms.infotexts[0]
    assert "NGMS: 100" in text and "NGMS all steps: True" in text and "Skip Early CFG" not in text
    back, _ = params_from_infotext(text)
    assert (back.s_min_uncond, back.s_min_uncond_all, back.skip_early_cond) == (100.0, True, None)


def test_skip_early_cfg_is_written_with_a1111s_key():
    text = build_infotext(
        GenerationParams(prompt="x", skip_early_cond=0.2), seed=1, model_name="m", model_hash="h"
    )
    assert "Skip Early CFG: 0.2" in text
    assert params_from_infotext(text)[0].skip_early_cond == 0.2
