"""GenerationParams: the one schema of a generation request (docs/design.md, example 4).

The field constraints here are at once the validation, the UI ranges, the (later) API schema and
the infotext labels: `json_schema_extra={"infotext": "<A1111 key>"}` names the key a field is
written under. A request that violates a constraint fails with a pydantic ValidationError, which
the UI shows as a message and the API turns into a 422.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.sampling.registry import resolve_sampler_and_schedule
from engine.schema.sampler_params import SamplerOverrides, check_sampler_options

MAX_STEPS = 150
# Hires fix's sampler / schedule type values that keep the first pass's (A1111's spellings).
SAME_AS_FIRST_PASS = (None, "", "Use same sampler", "Use same scheduler")
ANY_SAMPLER = "Euler a"  # a schedule type is checked on its own, beside any valid sampler
MAX_SEED = 2**32 - 1
MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 2048, 8


def _label(key: str | None, **extra: Any) -> dict[str, Any]:
    """Schema extras: the A1111 infotext key of a field (None: not written as a key)."""
    return {"infotext": key, **extra}


def _hr(key: str, **extra: Any) -> dict[str, Any]:
    """A hires-fix field: written under `key` only when hires fix is on."""
    return _label(key, infotext_when="enable_hr", **extra)


class GenerationParams(SamplerOverrides):
    """Everything that decides the pictures of a txt2img job. Frozen: derive with `model_copy`.

    The A1111 sampler parameters (eta, sigma churn, UniPC options, ...) come from `SamplerOverrides`:
    None means "the Sampler settings value", filled in when the job is submitted."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # no NaN or Infinity

    prompt: str = Field("", max_length=20000, json_schema_extra=_label(None))
    negative_prompt: str = Field("", max_length=20000, json_schema_extra=_label(None))
    steps: int = Field(20, ge=1, le=MAX_STEPS, json_schema_extra=_label("Steps"))
    sampler_name: str = Field("Euler a", min_length=1, json_schema_extra=_label("Sampler"))
    scheduler: str = Field("Automatic", min_length=1, json_schema_extra=_label("Schedule type"))
    cfg_scale: float = Field(
        7.0, ge=0.0, le=30.0, allow_inf_nan=False, json_schema_extra=_label("CFG scale", step=0.5)
    )
    # Forge's "Distilled CFG Scale": the guidance Flux dev takes as an input (its real CFG stays 1);
    # written to the infotext only for models that take it (engine.pipeline.stages).
    distilled_cfg_scale: float = Field(
        3.5,
        ge=0.0,
        le=30.0,
        allow_inf_nan=False,
        json_schema_extra=_label("Distilled CFG Scale", infotext_default=3.5, step=0.1),
    )
    seed: int = Field(-1, ge=-1, le=MAX_SEED, json_schema_extra=_label("Seed"))
    # A1111's variation seed: the initial noise is the seed's noise moved towards the variation
    # seed's by the strength (spherical interpolation). Written only with a strength above 0.
    subseed: int = Field(
        -1, ge=-1, le=MAX_SEED, json_schema_extra=_label("Variation seed", infotext_when="subseed_strength")
    )
    subseed_strength: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        json_schema_extra=_label("Variation seed strength", infotext_default=0.0, step=0.01),
    )
    width: int = Field(
        512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=SIZE_MULTIPLE, json_schema_extra=_label("Size")
    )
    height: int = Field(
        512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=SIZE_MULTIPLE, json_schema_extra=_label("Size")
    )
    batch_size: int = Field(1, ge=1, le=16, json_schema_extra=_label("Batch size"))
    n_iter: int = Field(1, ge=1, le=100, json_schema_extra=_label(None))
    # Title or name of the checkpoint; None keeps the one that is loaded.
    checkpoint: str | None = Field(None, json_schema_extra=_label("Model"))
    # The SDXL refiner (A1111 1.6+): the sampler continues on this checkpoint after the fraction
    # `refiner_switch_at` of the steps. None (or A1111's "None") and a switch at 1 mean no refiner;
    # the infotext's `Refiner: name [hash]` comes from the loaded refiner (engine.pipeline.refiner).
    refiner_checkpoint: str | None = Field(
        None, json_schema_extra=_label("Refiner", infotext_when="uses_refiner")
    )
    refiner_switch_at: float = Field(
        0.8,
        ge=0.01,
        le=1.0,
        allow_inf_nan=False,
        json_schema_extra=_label("Refiner switch at", infotext_when="uses_refiner", step=0.01),
    )
    # Names of styles (styles.csv) merged into the prompts when the job is submitted; the infotext
    # then holds the merged prompts, as in A1111.
    styles: tuple[str, ...] = Field((), max_length=64, json_schema_extra=_label(None))

    # Hires fix (A1111): a second, img2img-like pass at a larger size. The `Hires …` keys are
    # written only when it is on (`infotext_when`), the others also only when set.
    enable_hr: bool = Field(False, json_schema_extra=_label(None))
    hr_scale: float = Field(
        2.0, ge=1.0, le=4.0, allow_inf_nan=False, json_schema_extra=_hr("Hires upscale", step=0.05)
    )
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIZE, json_schema_extra=_hr("Hires resize", infotext_default=0))
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIZE, json_schema_extra=_hr("Hires resize", infotext_default=0))
    hr_upscaler: str = Field("Latent", min_length=1, json_schema_extra=_hr("Hires upscaler"))
    hr_second_pass_steps: int = Field(
        0, ge=0, le=MAX_STEPS, json_schema_extra=_hr("Hires steps", infotext_default=0)
    )
    denoising_strength: float = Field(
        0.7, ge=0.0, le=1.0, allow_inf_nan=False, json_schema_extra=_hr("Denoising strength", step=0.01)
    )
    hr_sampler_name: str | None = Field(None, json_schema_extra=_hr("Hires sampler"))
    hr_scheduler: str | None = Field(None, json_schema_extra=_hr("Hires schedule type"))
    hr_prompt: str = Field("", max_length=20000, json_schema_extra=_hr("Hires prompt", infotext_default=""))
    hr_negative_prompt: str = Field(
        "", max_length=20000, json_schema_extra=_hr("Hires negative prompt", infotext_default="")
    )

    @model_validator(mode="before")
    @classmethod
    def _split_legacy_sampler(cls, data: Any) -> Any:
        """Accept A1111's combined names ("DPM++ 2M Karras") and canonical spellings."""
        if isinstance(data, dict) and "sampler_name" in data:
            data = dict(data)
            try:
                sampler, schedule = resolve_sampler_and_schedule(
                    str(data["sampler_name"]), data.get("scheduler")
                )
            except ValueError:
                return data  # the field validators below say which of the two is unknown
            data["sampler_name"], data["scheduler"] = sampler, schedule
        return data

    @field_validator("refiner_checkpoint")
    @classmethod
    def _no_refiner_is_none(cls, name: str | None) -> str | None:
        return None if name is None or name.strip() in ("", "None") else name

    @property
    def uses_refiner(self) -> bool:
        return self.refiner_checkpoint is not None and self.refiner_switch_at < 1

    @field_validator("sampler_name")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        return resolve_sampler_and_schedule(name, None)[0]

    @field_validator("scheduler")
    @classmethod
    def _known_schedule(cls, name: str) -> str:
        return resolve_sampler_and_schedule(ANY_SAMPLER, name)[1]

    @field_validator("hr_sampler_name")
    @classmethod
    def _known_hires_sampler(cls, name: str | None) -> str | None:
        return name if name in SAME_AS_FIRST_PASS else resolve_sampler_and_schedule(name, None)[0]

    @field_validator("hr_scheduler")
    @classmethod
    def _known_hires_schedule(cls, name: str | None) -> str | None:
        return name if name in SAME_AS_FIRST_PASS else resolve_sampler_and_schedule(ANY_SAMPLER, name)[1]

    @model_validator(mode="after")
    def _sampler_options_valid_together(self) -> GenerationParams:
        check_sampler_options(self.model_dump())
        return self

    @property
    def images_per_job(self) -> int:
        return self.batch_size * self.n_iter

    def with_seed(self, seed: int) -> GenerationParams:
        return self.model_copy(update={"seed": seed})


def field_limits(name: str, cls: type[BaseModel] | None = None) -> dict[str, Any]:
    """min/max/step of a numeric field of `cls` (GenerationParams by default), read from its
    constraints (for UI sliders and the API's slider descriptions)."""
    info = (cls or GenerationParams).model_fields[name]
    limits: dict[str, Any] = {"default": info.default}
    for meta in info.metadata:
        for attr, key in (("ge", "minimum"), ("le", "maximum"), ("multiple_of", "step")):
            if getattr(meta, attr, None) is not None:
                limits[key] = getattr(meta, attr)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "step" in extra:
        limits["step"] = extra["step"]
    return limits


RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # A1111's order (API: 0..3)
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")


def _unwritten_at(default: Any, key: str, **extra: Any) -> dict[str, Any]:
    """An infotext key A1111 leaves out while the value is at `default`."""
    return _label(key, infotext_default=default, **extra)


class Img2ImgParams(GenerationParams):
    """An img2img / inpaint job: GenerationParams plus A1111's img2img and inpainting options.

    The pictures themselves (init images, mask) are not parameters: they travel beside them
    (`engine.pipeline.img2img.Img2ImgInputs`). The mask options are written to the infotext only when
    the job has a mask (the pipeline clears them otherwise), with A1111's keys and spellings."""

    # img2img's own strength (A1111: 0.75), always written; hires fix's is GenerationParams'.
    denoising_strength: float = Field(
        0.75, ge=0.0, le=1.0, allow_inf_nan=False, json_schema_extra=_label("Denoising strength", step=0.01)
    )
    resize_mode: int = Field(0, ge=0, le=len(RESIZE_MODES) - 1, json_schema_extra=_label(None))
    # A1111 "img2img_fix_steps": run exactly `steps` steps whatever the strength (steps / strength
    # schedule, last `steps` of it) instead of strength × steps. This and the noise multiplier
    # are settings in A1111; None here means "the Settings value", filled in at submit time.
    img2img_fix_steps: bool | None = Field(None, json_schema_extra=_label(None))
    initial_noise_multiplier: float | None = Field(
        None, ge=0.0, le=1.5, allow_inf_nan=False, json_schema_extra=_unwritten_at(1.0, "Noise multiplier")
    )
    mask_blur: int | None = Field(4, ge=0, le=64, json_schema_extra=_unwritten_at(0, "Mask blur"))
    inpainting_mask_invert: int | None = Field(
        0, ge=0, le=1, json_schema_extra=_unwritten_at(0, "Mask mode", choices=MASK_MODES)
    )
    inpainting_fill: int | None = Field(
        1, ge=0, le=3, json_schema_extra=_unwritten_at(1, "Masked content", choices=MASKED_CONTENT)
    )
    inpaint_full_res: int | None = Field(
        0, ge=0, le=1, json_schema_extra=_unwritten_at(0, "Inpaint area", choices=INPAINT_AREAS)
    )
    inpaint_full_res_padding: int | None = Field(
        32, ge=0, le=256, json_schema_extra=_label("Masked area padding")
    )

    @model_validator(mode="before")
    @classmethod
    def _choice_names(cls, data: Any) -> Any:
        """The infotext (and users) name the choices ("latent noise"); the fields hold A1111's
        API numbers. Accept either."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, choices in _CHOICE_FIELDS.items():
            value = data.get(name)
            if isinstance(value, str) and value in choices:
                data[name] = choices.index(value)
            elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
                data[name] = int(value)
        return data

    def without_mask_options(self) -> Img2ImgParams:
        """What the infotext of a job without a mask records (A1111 writes no mask keys then)."""
        return self.model_copy(update=dict.fromkeys(MASK_FIELDS))

    @property
    def masked_content(self) -> str:
        return MASKED_CONTENT[self.inpainting_fill if self.inpainting_fill is not None else 1]


def img2img_settings(params: Img2ImgParams, settings: Any) -> dict[str, Any]:
    """The update that fills a job's unset img2img options from the Settings."""
    names = ("img2img_fix_steps", "initial_noise_multiplier")
    return {name: getattr(settings, name) for name in names if getattr(params, name) is None}


_CHOICE_FIELDS = {
    "resize_mode": RESIZE_MODES,
    "inpainting_mask_invert": MASK_MODES,
    "inpainting_fill": MASKED_CONTENT,
    "inpaint_full_res": INPAINT_AREAS,
}
MASK_FIELDS = (
    "mask_blur",
    "inpainting_mask_invert",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
)
