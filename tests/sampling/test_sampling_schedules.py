"""Schedule types, the σ builder (overrides, ρ, discard-next-to-last, samplers' own grids) and the
sampler options' validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.sampling.registry import SCHEDULES, build_sigmas
from engine.sampling.samplers import SamplerOptions
from engine.sampling.schedules import (
    AYS_SD15,
    AYS_SDXL,
    ModelSigmas,
    ScheduleSettings,
    beta_cdf,
    beta_ppf,
    ddim_uniform,
    karras,
    uniform,
)
from engine.schema.sampler_params import ROWS
from tests.fakes.sampling import MODEL


def schedule(name: str, steps: int, **settings) -> torch.Tensor:
    return SCHEDULES[name].fn(steps, MODEL, ScheduleSettings(**settings))


def test_defaults_build_the_same_sigmas_as_before():
    assert torch.equal(build_sigmas("Euler a", "Automatic", 20, MODEL), uniform(20, MODEL))
    assert torch.equal(build_sigmas("DPM++ 2M", "Automatic", 20, MODEL), karras(20, MODEL))
    assert torch.equal(build_sigmas("DDIM", "Automatic", 20, MODEL), ddim_uniform(20, MODEL))
    assert torch.equal(build_sigmas("Euler", "Karras", 7, MODEL), karras(7, MODEL))


def test_sigma_and_rho_overrides_reach_the_schedules_that_take_them():
    options = SamplerOptions(sigma_min=0.1, sigma_max=10.0, rho=3.0)
    sigmas = build_sigmas("Euler", "Karras", 10, MODEL, options)
    assert math.isclose(float(sigmas[0]), 10.0, rel_tol=1e-6)
    assert math.isclose(float(sigmas[-2]), 0.1, rel_tol=1e-6)
    ramp = (
        10.0 ** (1 / 3) + torch.linspace(0, 1, 10, dtype=torch.float64) * (0.1 ** (1 / 3) - 10.0 ** (1 / 3))
    ) ** 3
    assert torch.allclose(sigmas[:-1].double(), ramp, rtol=1e-6)
    for name in ("Exponential", "Polyexponential", "KL Optimal", "Beta", "Normal", "SGM Uniform"):
        overridden = build_sigmas("Euler", name, 10, MODEL, SamplerOptions(sigma_min=0.1, sigma_max=10.0))
        assert math.isclose(float(overridden[0]), 10.0, rel_tol=1e-3), name
        assert min(float(s) for s in overridden if s > 0) >= 0.1 * (1 - 1e-3), name
    # A1111 defines these on the model's table (or a fixed table): the overrides do not apply.
    for name in ("Uniform", "Simple", "DDIM", "Align Your Steps"):
        assert torch.equal(
            build_sigmas("Euler", name, 10, MODEL, options), build_sigmas("Euler", name, 10, MODEL)
        )


def test_polyexponential_with_rho_one_is_exponential():
    assert torch.allclose(schedule("Polyexponential", 12), schedule("Exponential", 12), rtol=1e-6)
    steeper = schedule("Polyexponential", 12, rho=2.0)
    assert float(steeper[6]) < float(schedule("Exponential", 12)[6])  # ρ > 1 spends more steps low


def test_bad_override_range_is_a_clear_error():
    with pytest.raises(ValueError, match="sigma min"):
        build_sigmas("Euler", "Karras", 10, MODEL, SamplerOptions(sigma_min=20.0))
    with pytest.raises(ValueError, match="below sigma_max"):
        SamplerOptions(sigma_min=5.0, sigma_max=1.0)


def test_discard_next_to_last_sigma_keeps_the_step_count():
    plain = karras(11, MODEL)
    dpm2 = build_sigmas("DPM2", "Automatic", 10, MODEL)
    assert len(dpm2) == 11 and float(dpm2[-1]) == 0.0
    assert torch.equal(dpm2, torch.cat([plain[:-2], plain[-1:]]))
    euler = build_sigmas("Euler", "Karras", 10, MODEL, SamplerOptions(always_discard_next_to_last_sigma=True))
    assert torch.equal(euler, dpm2)
    assert len(build_sigmas("DPM++ 3M SDE", "Automatic", 10, MODEL)) == 11


def test_normal_and_sgm_uniform_on_the_model_timesteps():
    assert torch.allclose(schedule("Normal", 10), uniform(10, MODEL), rtol=1e-5)
    sgm = schedule("SGM Uniform", 10)
    assert torch.allclose(sgm[:-1], MODEL.t_to_sigma(torch.linspace(999, 0, 11)[:-1]), rtol=1e-5)


def test_simple_picks_entries_of_the_model_table():
    sigmas = schedule("Simple", 10)[:-1]
    indices = [999 - int(k * 100) for k in range(10)]
    assert torch.equal(sigmas, MODEL.sigmas[indices])


def test_kl_optimal_is_even_in_arctan_sigma_and_ends_at_sigma_min():
    sigmas = schedule("KL Optimal", 8).double()
    angles = torch.atan(sigmas)
    assert torch.allclose(angles[1:] - angles[:-1], (angles[1] - angles[0]).expand(8), rtol=1e-4)
    assert math.isclose(float(sigmas[-1]), MODEL.sigma_min, rel_tol=1e-5)


@pytest.mark.parametrize(("is_sdxl", "table"), [(False, AYS_SD15), (True, AYS_SDXL)])
def test_align_your_steps_tables(is_sdxl, table):
    exact = schedule("Align Your Steps", 11, is_sdxl=is_sdxl)
    assert torch.allclose(exact[:-1], torch.tensor(table)) and float(exact[-1]) == 0
    resampled = schedule("Align Your Steps", 21, is_sdxl=is_sdxl)[:-1]
    assert math.isclose(float(resampled[0]), table[0], rel_tol=1e-6)
    assert math.isclose(float(resampled[-1]), table[-1], rel_tol=1e-6)
    assert torch.allclose(resampled[::2], torch.tensor(table), rtol=1e-5)  # log-linear: keeps the nodes
    sdxl = build_sigmas("Euler", "Align Your Steps", 11, MODEL, is_sdxl=is_sdxl)
    assert torch.equal(sdxl, exact)


@pytest.mark.parametrize("q", [0.0, 0.01, 0.2, 0.5, 0.77, 0.999, 1.0])
def test_beta_quantiles_match_closed_forms(q):
    assert math.isclose(beta_ppf(q, 1.0, 1.0), q, abs_tol=1e-12)
    assert math.isclose(beta_ppf(q, 0.5, 0.5), math.sin(math.pi * q / 2) ** 2, abs_tol=1e-12)
    assert math.isclose(beta_ppf(q, 1.0, 2.0), 1 - math.sqrt(1 - q), abs_tol=1e-12)
    assert math.isclose(beta_cdf(beta_ppf(q, 0.6, 0.6), 0.6, 0.6), q, abs_tol=1e-12)


def test_beta_schedule_spans_the_range_and_follows_its_parameters():
    sigmas = build_sigmas("Euler", "Beta", 10, MODEL)[:-1].double()
    assert math.isclose(float(sigmas[0]), MODEL.sigma_max, rel_tol=1e-6)
    assert math.isclose(float(sigmas[-1]), MODEL.sigma_min, rel_tol=1e-6)
    levels = 1 - np.linspace(0, 1, 10)
    expected = [MODEL.sigma_min + beta_ppf(q, 0.6, 0.6) * (MODEL.sigma_max - MODEL.sigma_min) for q in levels]
    assert torch.allclose(sigmas, torch.tensor(expected, dtype=torch.float64), rtol=1e-6)
    other = build_sigmas("Euler", "Beta", 10, MODEL, SamplerOptions(beta_dist_alpha=2.0, beta_dist_beta=0.5))
    assert not torch.allclose(other, build_sigmas("Euler", "Beta", 10, MODEL))


def test_unipc_automatic_uses_its_skip_type_grid():
    uniform_t = build_sigmas("UniPC", "Automatic", 10, MODEL)
    assert len(uniform_t) == 11  # steps + 1 points, ending at σ_min as A1111's UniPC does
    assert torch.allclose(uniform_t, MODEL.t_to_sigma(torch.linspace(999, 0, 11)), rtol=1e-5)
    log_snr = build_sigmas(
        "UniPC", "Automatic", 10, MODEL, SamplerOptions(uni_pc_skip_type="logSNR")
    ).double()
    ratios = log_snr[1:] / log_snr[:-1]
    assert torch.allclose(ratios, ratios[0].expand(10), rtol=1e-4)
    quadratic = build_sigmas(
        "UniPC", "Automatic", 10, MODEL, SamplerOptions(uni_pc_skip_type="time_quadratic")
    )
    t = torch.linspace(1, math.sqrt(1e-3), 11, dtype=torch.float64) ** 2 * 1000 - 1
    assert torch.allclose(quadratic, MODEL.t_to_sigma(t.float()), rtol=1e-5)
    assert torch.equal(build_sigmas("UniPC", "Karras", 10, MODEL), karras(10, MODEL))


def test_lcm_automatic_uses_the_50_original_lcm_timesteps():
    sigmas = build_sigmas("LCM", "Automatic", 4, MODEL)
    table = ModelSigmas(MODEL.sigmas[19::20])
    assert torch.allclose(sigmas[:-1], table.t_to_sigma(torch.linspace(49, 0, 4)), rtol=1e-6)
    assert math.isclose(float(sigmas[-2]), float(MODEL.sigmas[19]), rel_tol=1e-6)  # timestep 19, not 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eta_ancestral": -1.0}, "eta_ancestral"),
        ({"s_noise": math.nan}, "s_noise"),
        ({"sigma_max": math.inf}, "sigma_max"),
        ({"rho": -2.0}, "rho"),
        ({"uni_pc_variant": "bh3"}, "uni_pc_variant"),
        ({"uni_pc_skip_type": "logsnr"}, "uni_pc_skip_type"),
        ({"uni_pc_order": 0}, "uni_pc_order"),
        ({"beta_dist_alpha": 0.0}, "beta_dist_alpha"),
    ],
)
def test_bad_sampler_options_are_rejected_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        SamplerOptions(**options)


def test_sampler_options_defaults_are_a1111s():
    o = SamplerOptions()
    assert (o.eta_ddim, o.eta_ancestral, o.s_churn, o.s_tmin, o.s_tmax, o.s_noise) == (0, 1, 0, 0, 0, 1)
    assert o.churn_tmax == math.inf  # s_tmax 0 means no upper limit, as in A1111's settings
    # The Settings / infotext table takes these defaults from SamplerOptions, its one definition.
    for row in ROWS:
        if row.group == "sampler":
            assert row.default == getattr(o, row.name), row.name
    assert (o.sigma_min, o.sigma_max, o.rho, o.always_discard_next_to_last_sigma) == (0, 0, 0, False)
    assert (o.uni_pc_variant, o.uni_pc_skip_type, o.uni_pc_order, o.uni_pc_lower_order_final) == (
        "bh1",
        "time_uniform",
        3,
        True,
    )
    assert (o.beta_dist_alpha, o.beta_dist_beta, o.eta_noise_seed_delta) == (0.6, 0.6, 0)
