"""σ-space samplers: the registration table, in A1111 1.10's dropdown order (docs/design.md, examples 1, 2).

Every sampler is a pure function
    fn(denoise, x, sigmas, *, noise, callback, options) -> x
where `denoise(x, σ) → x̂₀` is the model already wrapped to σ-space with guidance applied (see
`denoiser.py`), `noise(x)` draws fresh N(0, 1) noise shaped like x from per-image seeded generators
(SDE samplers also use `noise.brownian(σ, σ_next)` when the source offers it, see `base.py`), and
`callback(StepInfo)` is called once per step (it may raise to interrupt). Loop state lives in locals.
Written by hand because diffusers' schedulers are stateful objects keyed by timestep, while A1111's
samplers and schedule types are defined over σ (k-diffusion's formulation).

The functions live by family: `k_samplers` (σ-ODE: Euler, Heun, DPM2, LMS, Restart), `dpm_solvers`
(DPM-Solver++ and its SDE variants), `dpm_fast` (DPM fast/adaptive), `timestep_samplers` (DDIM,
DDIM CFG++, PLMS, LCM) and `unipc`. Adding a sampler = a function there + one row in
`SAMPLER_TABLE`, which `engine.sampling.registry` composes. The names, aliases and "Automatic"
schedule types are A1111's.
"""

from __future__ import annotations

from engine.sampling import dpm_fast, dpm_solvers, k_samplers, timestep_samplers, unipc
from engine.sampling.base import (  # noqa: F401  (re-exported: the public sampler API)
    AUTOMATIC,
    BrownianNoise,
    Denoise,
    NoiseFn,
    SamplerOptions,
    StepCallback,
    StepInfo,
    ancestral_step,
)
from engine.sampling.schedules import lcm_sigmas, unipc_sigmas

SAMPLER_TABLE = [
    # name, function, keyword arguments of registry.SamplerSpec
    (
        "DPM++ 2M",
        dpm_solvers.sample_dpmpp_2m,
        dict(aliases=("k_dpmpp_2m", "dpmpp_2m"), default_schedule="Karras"),
    ),
    (
        "DPM++ SDE",
        dpm_solvers.sample_dpmpp_sde,
        dict(aliases=("k_dpmpp_sde", "dpmpp_sde"), default_schedule="Karras", uses_noise=True),
    ),
    (
        "DPM++ 2M SDE",
        dpm_solvers.sample_dpmpp_2m_sde,
        dict(aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde"), default_schedule="Exponential", uses_noise=True),
    ),
    (
        "DPM++ 2M SDE Heun",
        dpm_solvers.sample_dpmpp_2m_sde_heun,
        dict(
            aliases=("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun"),
            default_schedule="Exponential",
            uses_noise=True,
        ),
    ),
    (
        "DPM++ 2S a",
        dpm_solvers.sample_dpmpp_2s_ancestral,
        dict(aliases=("k_dpmpp_2s_a", "dpmpp_2s_ancestral"), default_schedule="Karras", uses_noise=True),
    ),
    (
        "DPM++ 3M SDE",
        dpm_solvers.sample_dpmpp_3m_sde,
        dict(
            aliases=("k_dpmpp_3m_sde", "dpmpp_3m_sde"),
            default_schedule="Exponential",
            uses_noise=True,
            discard_next_to_last_sigma=True,
        ),
    ),
    (
        "Euler a",
        k_samplers.sample_euler_ancestral,
        dict(aliases=("k_euler_a", "k_euler_ancestral", "euler_ancestral"), uses_noise=True),
    ),
    ("Euler", k_samplers.sample_euler, dict(aliases=("k_euler", "euler"))),
    ("LMS", k_samplers.sample_lms, dict(aliases=("k_lms", "lms"))),
    ("Heun", k_samplers.sample_heun, dict(aliases=("k_heun", "heun"))),
    (
        "DPM2",
        k_samplers.sample_dpm_2,
        dict(aliases=("k_dpm_2", "dpm_2"), default_schedule="Karras", discard_next_to_last_sigma=True),
    ),
    (
        "DPM2 a",
        k_samplers.sample_dpm_2_ancestral,
        dict(
            aliases=("k_dpm_2_a", "dpm_2_ancestral"),
            default_schedule="Karras",
            uses_noise=True,
            discard_next_to_last_sigma=True,
        ),
    ),
    ("DPM fast", dpm_fast.sample_dpm_fast, dict(aliases=("k_dpm_fast", "dpm_fast"), uses_noise=True)),
    (
        "DPM adaptive",
        dpm_fast.sample_dpm_adaptive,
        dict(aliases=("k_dpm_ad", "dpm_adaptive"), uses_noise=True),
    ),
    (
        "Restart",
        k_samplers.sample_restart,
        dict(aliases=("restart",), default_schedule="Karras", uses_noise=True),
    ),
    ("DDIM", timestep_samplers.sample_ddim, dict(aliases=("ddim",), default_schedule="DDIM")),
    (
        "DDIM CFG++",
        timestep_samplers.sample_ddim_cfgpp,
        dict(aliases=("ddim_cfgpp",), default_schedule="DDIM"),
    ),
    ("PLMS", timestep_samplers.sample_plms, dict(aliases=("plms",), default_schedule="DDIM")),
    (
        "UniPC",
        unipc.sample_unipc,
        dict(aliases=("unipc",), default_schedule=AUTOMATIC, own_schedule=unipc_sigmas),
    ),
    (
        "LCM",
        timestep_samplers.sample_lcm,
        dict(aliases=("k_lcm", "lcm"), default_schedule=AUTOMATIC, own_schedule=lcm_sigmas, uses_noise=True),
    ),
]
