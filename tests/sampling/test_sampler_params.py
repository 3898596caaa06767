"""A1111's sampler parameters: Settings defaults, per-job overrides, infotext keys, and that they
actually reach the sampler."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from engine.pipeline.txt2img import txt2img
from engine.sampling.base import SamplerOptions
from engine.schema.infotext import build_infotext, params_from_infotext
from engine.schema.params import GenerationParams
from engine.schema.sampler_params import (
    A1111_DEFAULTS,
    NAMES,
    SAMPLER_NAMES,
    resolve_overrides,
    sampler_options,
)
from engine.schema.settings import Settings
from tests.fakes.fake_engine import FakeEngine
from tests.fakes.tiny_models import load_tiny
from tests.fakes.tiny_models import tiny_params as params
from ui.tabs.settings import apply_settings, setting_names


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


def test_defaults_are_a1111s_and_match_the_sampler_options():
    settings = Settings()
    options = SamplerOptions()
    for name in NAMES:
        assert getattr(settings, name) == A1111_DEFAULTS[name]
        assert getattr(GenerationParams(), name) is None  # unset: the settings decide
        if name in SAMPLER_NAMES and name != "s_tmax":  # s_tmax: A1111 says 0 for "no limit", the sampler inf
            assert getattr(options, name) == A1111_DEFAULTS[name], name
    assert sampler_options(GenerationParams()) == SamplerOptions(s_tmax=0.0)
    assert SamplerOptions(s_tmax=0.0).churn_tmax == float("inf")


def test_non_default_values_are_written_with_a1111_keys_and_read_back():
    p = GenerationParams(
        prompt="x",
        eta_ancestral=0.5,
        eta_ddim=0.0,  # the default: not written
        eta_noise_seed_delta=31337,
        s_churn=1.5,
        uni_pc_variant="bh2",
        always_discard_next_to_last_sigma=True,
        beta_dist_alpha=0.5,
    )
    text = build_infotext(p, seed=1, model_name="m", model_hash="h")
    for pair in (
        "Eta: 0.5",
        "ENSD: 31337",
        "Sigma churn: 1.5",
        "UniPC variant: bh2",
        "Discard penultimate sigma: True",
        "Beta schedule alpha: 0.5",
    ):
        assert pair in text
    assert "Eta DDIM" not in text and "UniPC order" not in text
    back, leftovers = params_from_infotext(text)
    assert (back.eta_ancestral, back.eta_noise_seed_delta, back.s_churn) == (0.5, 31337, 1.5)
    assert back.uni_pc_variant == "bh2" and back.always_discard_next_to_last_sigma is True
    assert back.eta_ddim is None and "Eta" not in leftovers


def test_a1111_infotext_with_sampler_settings_parses():
    text = (
        "a cat\nSteps: 20, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 7, Seed: 5, "
        "Size: 512x512, Eta: 0.67, Sigma noise: 0.95, Schedule rho: 5, UniPC skip type: logSNR"
    )
    p, leftovers = params_from_infotext(text)
    assert (p.eta_ancestral, p.s_noise, p.rho, p.uni_pc_skip_type) == (0.67, 0.95, 5.0, "logSNR")
    assert not leftovers


@pytest.mark.parametrize(
    "bad",
    [
        {"eta_ancestral": -1},
        {"uni_pc_variant": "bh9"},
        {"uni_pc_order": 0},
        {"sigma_min": 5, "sigma_max": 2},
        {"beta_dist_alpha": 0},
        {"s_noise": float("nan")},
    ],
)
def test_bad_values_are_rejected_with_a_message(bad):
    with pytest.raises(ValidationError):
        GenerationParams(**bad)
    with pytest.raises(ValidationError):
        Settings(**{k: v for k, v in bad.items()})


def test_unset_values_come_from_the_settings_and_set_ones_win():
    settings = Settings(eta_ancestral=0.3, s_churn=2.0)
    job = GenerationParams(s_churn=0.5)
    resolved = job.model_copy(update=resolve_overrides(job, settings))
    assert resolved.eta_ancestral == 0.3 and resolved.s_churn == 0.5
    assert resolved.uni_pc_order == 3


def test_eta_reaches_the_sampler(model):  # noqa: F811
    """Euler a with η = 0 adds no noise, so it must equal plain Euler; η = 1 must not."""
    euler = txt2img(model, params(sampler_name="Euler", scheduler="Uniform")).images[0]
    eta0 = txt2img(model, params(sampler_name="Euler a", scheduler="Uniform", eta_ancestral=0.0))
    eta1 = txt2img(model, params(sampler_name="Euler a", scheduler="Uniform"))
    assert np.array_equal(np.asarray(eta0.images[0]), np.asarray(euler))
    assert not np.array_equal(np.asarray(eta1.images[0]), np.asarray(euler))
    assert "Eta: 0" in eta0.infotexts[0]


def test_sampler_settings_tab_saves_and_rejects():
    engine = FakeEngine()
    assert "eta_ancestral" not in setting_names()  # it lives on the Sampler settings tab
    ok = apply_settings(engine, ["eta_ancestral", "uni_pc_variant"], [0.25, "bh2"])
    assert "Saved 2" in ok and engine.settings.eta_ancestral == 0.25
    bad = apply_settings(engine, ["sigma_min", "sigma_max"], [5.0, 2.0])
    assert "not saved" in bad and engine.settings.sigma_min == 0.0
