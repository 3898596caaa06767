# ruff: noqa: E501  (one row per line keeps the table readable)
"""A1111's per-job options as one table: Settings defaults, per-job overrides, infotext keys.

Mostly the sampler parameters; CLIP skip and the emphasis mode ride along (group "conditioning"):
they are the same kind of thing in A1111 (an option a job or an infotext may override).

Each row is an A1111 option name (the `shared.opts` key, also accepted in API `override_settings`),
its A1111 default, its infotext key, and the Sampler settings tab's label. From the table come:
- `SamplerDefaults`: the fields `engine.schema.settings.Settings` inherits (the "Sampler settings" tab);
- `SamplerOverrides`: the optional fields `GenerationParams` inherits (None = use the setting);
- `sampler_options(params)`: the `SamplerOptions` a job's sampler runs with.
A value equal to A1111's default is not written to the infotext, as A1111 does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from engine.conditioning.clip import EMPHASIS_MODES
from engine.sampling.base import UNI_PC_SKIP_TYPES, UNI_PC_VARIANTS, SamplerOptions

OPTION = object()  # a row's default: SamplerOptions' own (the one definition of a sampler default)
_OPTION_DEFAULTS = {f.name: f.default for f in fields(SamplerOptions)}


@dataclass(frozen=True)
class Row:
    name: str
    type: Any
    default: Any
    infotext: str
    label: str
    constraints: dict[str, Any]
    group: str = "sampler"  # "sampler": a SamplerOptions field; "conditioning": read by the prompt encoder

    def __post_init__(self) -> None:
        if self.default is OPTION:
            object.__setattr__(self, "default", _OPTION_DEFAULTS[self.name])


ROWS: tuple[Row, ...] = (
    Row("eta_ddim", float, OPTION, "Eta DDIM", "Eta for DDIM (noise added per step; 0 = deterministic)", {"ge": 0, "le": 1}),
    Row("eta_ancestral", float, OPTION, "Eta", "Eta for ancestral and SDE samplers (noise per step)", {"ge": 0, "le": 1}),
    Row("eta_noise_seed_delta", int, OPTION, "ENSD", "Eta noise seed delta (added to the seed of per-step noise)", {"ge": 0, "le": 2**32 - 1}),
    Row("s_churn", float, OPTION, "Sigma churn", "Sigma churn (Euler, Heun, DPM2)", {"ge": 0, "le": 100}),
    Row("s_tmin", float, OPTION, "Sigma tmin", "Sigma tmin: churn only at sigma ≥ this", {"ge": 0, "le": 10}),
    Row("s_tmax", float, OPTION, "Sigma tmax", "Sigma tmax: churn only at sigma ≤ this (0 = no limit)", {"ge": 0, "le": 999}),
    Row("s_noise", float, OPTION, "Sigma noise", "Sigma noise: scale of the noise of churn and SDE steps", {"ge": 0, "le": 1.1}),
    Row("sigma_min", float, OPTION, "Schedule min sigma", "Schedule min sigma override (0 = the model's)", {"ge": 0, "le": 100}),
    Row("sigma_max", float, OPTION, "Schedule max sigma", "Schedule max sigma override (0 = the model's)", {"ge": 0, "le": 1000}),
    Row("rho", float, OPTION, "Schedule rho", "Schedule rho (Karras, Polyexponential; 0 = the schedule's own)", {"ge": 0, "le": 20}),
    Row("always_discard_next_to_last_sigma", bool, OPTION, "Discard penultimate sigma", "Always discard the next-to-last sigma", {}),
    Row("uni_pc_variant", Literal[UNI_PC_VARIANTS], OPTION, "UniPC variant", "UniPC variant", {}),
    Row("uni_pc_skip_type", Literal[UNI_PC_SKIP_TYPES], OPTION, "UniPC skip type", "UniPC skip type", {}),
    Row("uni_pc_order", int, OPTION, "UniPC order", "UniPC order (must be < sampling steps)", {"ge": 1, "le": 50}),
    Row("uni_pc_lower_order_final", bool, OPTION, "UniPC lower order final", "UniPC: lower order on the final steps", {}),
    Row("skip_early_cond", float, OPTION, "Skip Early CFG", "Ignore negative prompt during early sampling: no CFG on this fraction of the first steps (0 = none)", {"ge": 0, "le": 1}),
    Row("s_min_uncond", float, OPTION, "NGMS", "Negative Guidance minimum sigma: no CFG on steps below this sigma (0 = never; faster)", {"ge": 0, "le": 100}),
    Row("s_min_uncond_all", bool, OPTION, "NGMS all steps", "Negative Guidance minimum sigma on every step (off: every other step, as A1111)", {}),
    Row("beta_dist_alpha", float, OPTION, "Beta schedule alpha", "Beta schedule alpha", {"gt": 0, "le": 10}),
    Row("beta_dist_beta", float, OPTION, "Beta schedule beta", "Beta schedule beta", {"gt": 0, "le": 10}),
    Row("shift", float, OPTION, "Shift", "Shift of a flow model's noise schedule (SD 3, Flux): higher spends more steps at high noise (0 = the model's own)", {"ge": 0, "le": 100}),
    Row("CLIP_stop_at_last_layers", int, 1, "Clip skip", "Clip skip: use CLIP's hidden state this many layers from the end (1 = the last)", {"ge": 1, "le": 12}, "conditioning"),
    Row("emphasis", Literal[EMPHASIS_MODES], "Original", "Emphasis", "Emphasis mode for (word:1.2): Original (mean restored), No norm, Ignore (weights unused), None (brackets are plain text)", {}, "conditioning"),
)  # fmt: skip
NAMES: tuple[str, ...] = tuple(r.name for r in ROWS)
SAMPLER_NAMES: tuple[str, ...] = tuple(r.name for r in ROWS if r.group == "sampler")
A1111_DEFAULTS: dict[str, Any] = {r.name: r.default for r in ROWS}
_OPTION_FIELDS = {f.name for f in fields(SamplerOptions)}
assert set(SAMPLER_NAMES) <= _OPTION_FIELDS, "every sampler row must be a SamplerOptions field"


def check_sampler_options(values: dict[str, Any]) -> None:
    """Cross-field rules (σ_min < σ_max, ...) live in SamplerOptions; reuse them."""
    given = {k: v for k, v in values.items() if k in SAMPLER_NAMES and v is not None}
    SamplerOptions(**given)  # raises ValueError with a readable message


class _DefaultsBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)  # no NaN or Infinity

    @model_validator(mode="after")
    def _valid_together(self):
        check_sampler_options(self.model_dump())
        return self


class _OverridesBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # no NaN or Infinity


SamplerDefaults = create_model(
    "SamplerDefaults",
    __base__=_DefaultsBase,
    **{
        r.name: (r.type, Field(r.default, description=r.label, allow_inf_nan=False, **r.constraints)
                 if r.type is float else Field(r.default, description=r.label, **r.constraints))
        for r in ROWS
    },
)  # fmt: skip

SamplerOverrides = create_model(
    "SamplerOverrides",
    __base__=_OverridesBase,
    **{
        r.name: (
            r.type | None,
            Field(
                None,
                json_schema_extra={"infotext": r.infotext, "infotext_default": r.default},
                **({"allow_inf_nan": False} if r.type is float else {}),
                **r.constraints,
            ),
        )
        for r in ROWS
    },
)  # fmt: skip


def resolve_overrides(params: Any, settings: Any, preferred: dict[str, Any] | None = None) -> dict[str, Any]:
    """The update that fills a job's unset (None) sampler parameters from the settings.

    `preferred`: the checkpoint's preferred values (`engine.models.preferences`). Each one fills a
    parameter the job leaves unset and the user's setting leaves at A1111's default, as A1111's
    per-checkpoint preferred VAE fills in for "Automatic": a value the user chose always wins."""
    preferred = preferred or {}
    update = {}
    for name in NAMES:
        if getattr(params, name) is not None:
            continue
        value = getattr(settings, name)
        if name in preferred and value == A1111_DEFAULTS[name]:
            value = preferred[name]
        update[name] = value
    return update


def sampler_options(params: Any) -> SamplerOptions:
    """What the sampler runs with: the job's values, A1111's defaults where still unset."""
    values = {name: getattr(params, name) for name in SAMPLER_NAMES}
    return SamplerOptions(**{k: (A1111_DEFAULTS[k] if v is None else v) for k, v in values.items()})


def overrides_from_entries(entries: list[str] | None) -> dict[str, Any]:
    """Inverse of `engine.schema.infotext.override_entries`: {field: raw value} for GenerationParams to validate.
    Raises ValueError naming an entry that is not a sampler parameter."""
    by_key = {r.infotext.lower(): r.name for r in ROWS}
    values: dict[str, Any] = {}
    for entry in entries or []:
        key, sep, value = str(entry).partition(":")
        name = by_key.get(key.strip().lower())
        if not sep or name is None:
            known = ", ".join(r.infotext for r in ROWS)
            raise ValueError(f"unknown override {entry!r}; expected 'Key: value' with a key among {known}")
        values[name] = value.strip()
    return values
