"""Name → sampler and name → schedule registries (docs/design.md, example 1).

Adding a sampler is a function in its family module and one row of `samplers.SAMPLER_TABLE`; adding
a schedule type is a function and one row of `schedules.SCHEDULE_TABLE`. The names are A1111's, so
infotexts and API requests from A1111 work. `build_sigmas` turns a request (sampler, schedule type,
steps, options) into the σ's the sampler runs on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.sampling.base import AUTOMATIC, SamplerOptions
from engine.sampling.samplers import SAMPLER_TABLE
from engine.sampling.schedules import SCHEDULE_TABLE, ModelSigmas, ScheduleSettings


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    # The schedule "Automatic" resolves to for this sampler (A1111's per-sampler default). AUTOMATIC
    # here means the sampler has its own discretization, `own_schedule` (UniPC, LCM).
    default_schedule: str = "Uniform"
    # Ancestral / SDE samplers add fresh noise every step; it is drawn from per-image seeded RNGs.
    uses_noise: bool = False
    # A1111 computes steps+1 σ's and drops the next-to-last (DPM2, DPM2 a, DPM++ 3M SDE): their last
    # step from a small σ to 0 would otherwise be a wasted second-order step.
    discard_next_to_last_sigma: bool = False
    # fn(steps, ModelSigmas, SamplerOptions) -> σ's, used when the schedule type is "Automatic".
    own_schedule: Callable[..., Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    fn: Callable[..., Any]
    label: str  # A1111's internal lowercase id ("karras"), accepted as an alias
    aliases: tuple[str, ...] = ()


# Composed here, in one place, from the two tables (not filled by import side effects).
SAMPLERS: dict[str, SamplerSpec] = {name: SamplerSpec(name, fn, **spec) for name, fn, spec in SAMPLER_TABLE}
SCHEDULES: dict[str, ScheduleSpec] = {
    name: ScheduleSpec(name, fn, label, aliases) for name, fn, label, aliases in SCHEDULE_TABLE
}


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def schedule_names() -> list[str]:
    return [AUTOMATIC, *SCHEDULES]


def _lookup_schedule(name: str) -> str | None:
    key = name.strip().lower()
    if key == AUTOMATIC.lower():
        return AUTOMATIC
    for spec in SCHEDULES.values():
        if key in (spec.name.lower(), spec.label, *(a.lower() for a in spec.aliases)):
            return spec.name
    return None


def _lookup_sampler(name: str) -> str | None:
    key = name.strip().lower()
    for spec in SAMPLERS.values():
        if key in (spec.name.lower(), *(a.lower() for a in spec.aliases)):
            return spec.name
    return None


def resolve_sampler_and_schedule(sampler: str, schedule: str | None) -> tuple[str, str]:
    """Canonical (sampler, schedule) names; splits legacy names like "DPM++ 2M Karras".

    Raises ValueError naming the choices when either is unknown.
    """
    resolved_schedule = AUTOMATIC if schedule in (None, "") else _lookup_schedule(str(schedule))
    if resolved_schedule is None:
        raise ValueError(f"unknown schedule type {schedule!r}; choose one of {schedule_names()}")
    resolved = _lookup_sampler(sampler)
    if resolved is None:
        # Legacy A1111 names append the schedule: "DPM++ 2M Karras", "Euler a Exponential".
        head, _, tail = sampler.strip().rpartition(" ")
        legacy_schedule = _lookup_schedule(tail) if head else None
        resolved = _lookup_sampler(head) if legacy_schedule else None
        if resolved is None:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {sampler_names()}")
        if resolved_schedule == AUTOMATIC:
            resolved_schedule = legacy_schedule
    return resolved, resolved_schedule


def schedule_hint(sampler: str) -> str:
    """One line for the UI: what "Automatic" means for `sampler` (A1111's per-sampler default)."""
    spec = SAMPLERS.get(sampler)
    if spec is None:
        return ""
    if spec.default_schedule == AUTOMATIC:
        return f"Automatic = {sampler}'s own timestep grid (recommended for it)"
    return f"Automatic = {spec.default_schedule}, the usual choice for {sampler}"


def effective_schedule(sampler: str, schedule: str) -> str:
    """The schedule actually used: "Automatic" becomes the sampler's default (which stays
    "Automatic" for samplers with their own discretization)."""
    return SAMPLERS[sampler].default_schedule if schedule == AUTOMATIC else schedule


def build_sigmas(
    sampler: str,
    schedule: str,
    steps: int,
    model: ModelSigmas,
    options: SamplerOptions | None = None,
    *,
    is_sdxl: bool = False,
) -> torch.Tensor:
    """The σ's `sampler` runs for `steps` steps: the schedule type ("Automatic" = the sampler's
    default, or its own discretization), the σ/ρ overrides, and A1111's "discard next-to-last σ"
    (computed for steps+1 and then dropped, so the step count stays `steps`)."""
    opts = options or SamplerOptions()
    spec = SAMPLERS[sampler]
    discard = spec.discard_next_to_last_sigma or opts.always_discard_next_to_last_sigma
    count = steps + 1 if discard else steps
    name = effective_schedule(sampler, schedule)
    if name == AUTOMATIC:
        sigmas = spec.own_schedule(count, model, opts)
    else:
        settings = ScheduleSettings(
            sigma_min=opts.sigma_min or None,
            sigma_max=opts.sigma_max or None,
            rho=opts.rho or None,
            beta_alpha=opts.beta_dist_alpha,
            beta_beta=opts.beta_dist_beta,
            is_sdxl=is_sdxl,
        )
        sigmas = SCHEDULES[name].fn(count, model, settings)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas
