"""Name → sampler and name → schedule registries (docs/design.md, example 1).

Adding a sampler is one decorated function in `samplers.py`; adding a schedule type is one decorated
function in `schedules.py`. The names are A1111's, so infotexts and API requests from A1111 work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AUTOMATIC = "Automatic"


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


SAMPLERS: dict[str, SamplerSpec] = {}
SCHEDULES: dict[str, ScheduleSpec] = {}


def register_sampler(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        SAMPLERS[name] = SamplerSpec(name=name, fn=fn, **kwargs)
        return fn

    return decorate


def register_schedule(
    name: str, label: str, aliases: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        SCHEDULES[name] = ScheduleSpec(name=name, fn=fn, label=label, aliases=aliases)
        return fn

    return decorate


def _ensure_loaded() -> None:
    # The registries fill when their modules import; import them on first use so that
    # `engine.schema.params` can validate names without import-order surprises.
    from engine.sampling import samplers, schedules  # noqa: F401


def sampler_names() -> list[str]:
    _ensure_loaded()
    return list(SAMPLERS)


def schedule_names() -> list[str]:
    _ensure_loaded()
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
    _ensure_loaded()
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
    _ensure_loaded()
    spec = SAMPLERS.get(sampler)
    if spec is None:
        return ""
    if spec.default_schedule == AUTOMATIC:
        return f"Automatic = {sampler}'s own timestep grid (recommended for it)"
    return f"Automatic = {spec.default_schedule}, the usual choice for {sampler}"


def effective_schedule(sampler: str, schedule: str) -> str:
    """The schedule actually used: "Automatic" becomes the sampler's default (which stays
    "Automatic" for samplers with their own discretization)."""
    _ensure_loaded()
    return SAMPLERS[sampler].default_schedule if schedule == AUTOMATIC else schedule
