"""Every sampler on the shipped built-in model, the way a user compares them.

1. Every sampler × schedule type runs through `engine.pipeline.txt2img` with no NaN and the expected number
   of UNet calls (the tiny-model matrix in test_sampling_pipeline.py, on real weights).
2. Each sampler at its usual step count draws what the prompt asks (the scorer's attributes on
   a few prompts, relaxed bars as in test_builtin_model.py), at CFG 7 with the settings a fresh
   install runs it with: A1111's defaults plus the built-in model's preferred NGMS 3 on every step
   (`models/builtin/atelier-tiny.json`, see 4.); DPM fast at 30 steps, as its steps are model calls
   (`world.adherence.usual_steps`). At A1111's bare defaults every sampler but the three of 3. draws
   the prompt too. A broken sampler paints noise or mud here even when its numbers look plausible
   on the tiny model.
3. The three extrapolating multistep samplers (LMS, PLMS, DPM fast) fall apart at CFG 7 on this
   model and draw well at CFG 3. In this world the prompt fixes nearly every pixel (the background
   fills the frame), so at high σ the conditional and unconditional predictions differ by ~75 % of
   the signal, and CFG 7 multiplies that into steps their 3rd/4th-order extrapolation overshoots.
   diffusers' LMSDiscreteScheduler paints the same picture to within one level, so it is the method
   on this model, not our code. Measured on 8 captions at CFG 7, 20 steps: LMS cut to order 1 (Euler)
   or 2 meets the bars, orders 3 and 4 do not, and more steps do not save order 4 (50 steps: background
   0.38): the instability of high-order Adams–Bashforth on a stiff equation. On the Exponential schedule
   (every step the same ratio σ_next/σ) the same LMS draws the prompt (background 1.0, shape 0.88).
   With an exact denoiser on data of the same kind (test_sampling_guidance.py) every sampler draws
   the prompt at CFG 7: what makes the equation stiff is the network's answers off its data.
4. Where it is stiff: LMS at order 4 only above σ 1.5 (Euler below) draws the prompt, and so does
   order 4 only below σ 0.4 or only in [0.4, 1.5]; order 4 on all of [0, 1.5] does not (8 captions).
   Below σ ≈ 3 the conditional prediction no longer looks at x (the Jacobian of the σ-space ODE's
   right-hand side, times σ, is 0.9–1.0 along every direction probed at CFG 1: x̂₀ is the prompt's
   picture whatever the noise), while the unconditional one still does, most along the prompted
   object's colour; CFG 7 multiplies that difference into σ·λ of 4.3–4.9 from σ 1.8 to 0.5 (Euler's
   path on a test prompt, power iteration), so a 20-step step of Δσ/σ ≈ 0.17 has hλ ≈ 0.8, outside 4th-order
   Adams–Bashforth's stability interval (≈ 0.3). A1111's "Negative Guidance minimum sigma" on
   every step runs the prompt alone there, and LMS and PLMS draw at CFG 7 (NGMS 1.5 is enough on
   these prompts; the built-in model prefers 3, which more captions need: README).
`bench/samplers.py` measures the same thing on more prompts and step counts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.pipeline import stages
from engine.pipeline.txt2img import txt2img
from engine.sampling.registry import sampler_names, schedule_names
from engine.schema.params import GenerationParams
from engine.service.jobs import Job
from tests.fakes.sampling import Recorder, expected_unet_calls
from world.adherence import generate_and_score, preferred_overrides, usual_steps

pytestmark = pytest.mark.slow

MATRIX_STEPS = 4
USUAL_STEPS = 20
# One prompt per shape, different colours and backgrounds (a subset of test_builtin_model's).
PROMPTS = [
    "a large red circle at the top left on a blue background",
    "a large yellow square at the bottom right on a black background",
    "a large white triangle in the center on a green background",
    "a large blue star on the left on a yellow background",
]
BARS = {"background": 0.75, "colour": 0.75, "shape": 0.5, "size": 0.75}


@pytest.mark.parametrize("sampler", sampler_names())
def test_every_schedule_runs_on_the_builtin_model(builtin_model, monkeypatch, sampler):
    for schedule in schedule_names():
        p = GenerationParams(
            prompt=PROMPTS[0], steps=MATRIX_STEPS, sampler_name=sampler, scheduler=schedule,
            cfg_scale=7, seed=3, width=128, height=128,
        )  # fmt: skip
        sigmas = stages.make_sigmas(builtin_model, p)
        with monkeypatch.context() as patch:
            record = Recorder(builtin_model, patch)
            job = Job()
            txt2img(builtin_model, p, job=job)
        (latents,) = record.latents
        assert torch.isfinite(latents).all(), schedule
        expected = expected_unet_calls(sampler, sigmas)
        if expected is None:  # DPM adaptive: as many as its error control needs, 3 per attempt
            assert record.calls > 0 and record.calls % 3 == 0, schedule
        else:
            assert record.calls == expected, (schedule, sigmas.tolist())
        assert job.progress.job_step == MATRIX_STEPS, schedule


@pytest.mark.parametrize("sampler", sampler_names())
def test_each_sampler_draws_the_prompt_as_a_fresh_install_runs_it(builtin_model, sampler):
    preferred = preferred_overrides(builtin_model)
    assert preferred == {"s_min_uncond": 3.0, "s_min_uncond_all": True}
    report = generate_and_score(
        builtin_model,
        PROMPTS,
        first_seed=500,
        sampler=sampler,
        steps=usual_steps(sampler),
        overrides=preferred,
    )
    fractions = report.fractions()
    assert all(fractions[k] >= v for k, v in BARS.items()), (fractions, report.scores)


MULTISTEP = ("LMS", "PLMS", "DPM fast")  # see 3. in the module docstring
_OVERSHOOT = pytest.mark.xfail(strict=True, reason="multistep extrapolation overshoots at CFG 7 here")
CASES = [
    *[(s, 7.0) for s in sampler_names() if s not in MULTISTEP],
    # The CFG each draws well at on the shipped model (PLMS, the longest extrapolation, needs the least).
    *[(s, 2.0 if s == "PLMS" else 3.0) for s in MULTISTEP],
    *[pytest.param(s, 7.0, marks=_OVERSHOOT, id=f"{s}-cfg7") for s in MULTISTEP],
]


@pytest.mark.parametrize(("sampler", "cfg"), CASES)
def test_each_sampler_draws_the_prompt_at_a1111_defaults(builtin_model, sampler, cfg):
    report = generate_and_score(
        builtin_model, PROMPTS, first_seed=500, sampler=sampler, steps=USUAL_STEPS, cfg_scale=cfg
    )
    fractions = report.fractions()
    assert all(fractions[k] >= v for k, v in BARS.items()), (fractions, report.scores)


def test_lms_at_cfg_7_is_what_diffusers_lms_paints(builtin_model, monkeypatch):
    from diffusers.schedulers import scheduling_lms_discrete

    from bench.reference import diffusers_euler_pipeline
    from tests.fakes.sampling import ExactQuad

    monkeypatch.setattr(scheduling_lms_discrete, "integrate", ExactQuad, raising=False)
    pipe = diffusers_euler_pipeline(builtin_model)
    pipe.scheduler = scheduling_lms_discrete.LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(500))
    with torch.inference_mode():
        theirs = pipe(
            PROMPTS[0], num_inference_steps=USUAL_STEPS, guidance_scale=7, height=128, width=128,
            latents=latents, output_type="np",
        ).images[0]  # fmt: skip
    ours = txt2img(
        builtin_model,
        GenerationParams(
            prompt=PROMPTS[0],
            sampler_name="LMS",
            scheduler="Uniform",
            steps=USUAL_STEPS,
            cfg_scale=7,
            seed=500,
            width=128,
            height=128,
        ),  # fmt: skip
    ).images[0]
    diff = np.abs(np.asarray(ours, dtype=np.int16) - np.round(theirs * 255).astype(np.int16))
    assert diff.max() <= 2, diff.max()


def test_lms_draws_the_prompt_at_cfg_7_on_the_exponential_schedule(builtin_model):
    """The overshoot of 3. is the schedule's step sizes meeting a 4th-order extrapolation, not a
    broken LMS: with every step the same ratio σ_next/σ, the same LMS at CFG 7 draws the prompt."""
    report = generate_and_score(
        builtin_model, PROMPTS, first_seed=500, sampler="LMS", steps=USUAL_STEPS, scheduler="Exponential"
    )
    fractions = report.fractions()
    assert all(fractions[k] >= v for k, v in BARS.items()), (fractions, report.scores)


@pytest.mark.parametrize("sampler", ["LMS", "PLMS"])
def test_multistep_samplers_draw_at_cfg_7_without_guidance_at_low_sigma(builtin_model, sampler):
    """4. in the module docstring: with NGMS 1.5 on all steps the stiff low-σ part runs unguided."""
    report = generate_and_score(
        builtin_model, PROMPTS, first_seed=500, sampler=sampler, steps=USUAL_STEPS,
        overrides={"s_min_uncond": 1.5, "s_min_uncond_all": True},
    )  # fmt: skip
    fractions = report.fractions()
    assert all(fractions[k] >= v for k, v in BARS.items()), (fractions, report.scores)
