"""Request and response bodies of the `/sdapi/v1` API, in A1111's field names and shapes.

The request models only say what A1111 clients send and its JSON types (so FastAPI answers a wrong
type with a 422 naming the field); the ranges and rules live once, in engine.schema.params — a request is
turned into GenerationParams by api.convert, and a value out of range comes back as a 422 naming
the same field. Unknown fields are ignored, as A1111 does: clients send fields for features we do
not have (restore_faces, ...), and refusing them would break those clients.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.schema.params import GenerationParams, Img2ImgParams, field_limits
from engine.upscale.extras import ExtrasParams


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # no NaN or Infinity


def _default(name: str, cls: type[BaseModel] = GenerationParams) -> Any:
    """The schema's default of a field: the one definition, shown in the API's docs. (A field a
    request leaves out is not filled from here: api.convert passes only what was sent, and the
    schema fills the rest.)"""
    return field_limits(name, cls)["default"]


class Txt2ImgRequest(_Request):
    prompt: str = _default("prompt")
    negative_prompt: str = _default("negative_prompt")
    styles: list[str] | None = None
    seed: int = _default("seed")
    subseed: int = _default("subseed")
    subseed_strength: float = _default("subseed_strength")
    sampler_name: str | None = None
    sampler_index: str | None = Field(None, description="old clients' name for sampler_name")
    scheduler: str | None = None
    batch_size: int = _default("batch_size")
    n_iter: int = _default("n_iter")
    steps: int = _default("steps")
    cfg_scale: float = _default("cfg_scale")
    distilled_cfg_scale: float | None = Field(
        None,
        description="Forge's Distilled CFG Scale: the guidance Flux dev takes as an input "
        f"(default {_default('distilled_cfg_scale')}); other models ignore it",
    )
    width: int = _default("width")
    height: int = _default("height")
    denoising_strength: float | None = None
    eta: float | None = Field(None, description="eta of the ancestral and DDIM samplers")
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    s_min_uncond: float | None = Field(None, description="Negative Guidance minimum sigma (NGMS)")
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    enable_hr: bool = _default("enable_hr")
    hr_scale: float = _default("hr_scale")
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = _default("hr_second_pass_steps")
    hr_resize_x: int = _default("hr_resize_x")
    hr_resize_y: int = _default("hr_resize_y")
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = _default("hr_prompt")
    hr_negative_prompt: str = _default("hr_negative_prompt")
    refiner_checkpoint: str | None = Field(None, description='a checkpoint title, or "None"')
    refiner_switch_at: float | None = Field(
        None, description=f"fraction of the steps run on the base (default {_default('refiner_switch_at')})"
    )
    script_name: str | None = None
    script_args: list[Any] | dict[str, Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = Field(None, description="parameters text applied before the other fields")


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] = Field(default_factory=list, description="base64 or data URLs")
    resize_mode: int = _default("resize_mode", Img2ImgParams)
    mask: str | None = None
    mask_blur: int | None = _default("mask_blur", Img2ImgParams)
    inpainting_fill: int = _default("inpainting_fill", Img2ImgParams)
    inpaint_full_res: bool = bool(_default("inpaint_full_res", Img2ImgParams))
    inpaint_full_res_padding: int = _default("inpaint_full_res_padding", Img2ImgParams)
    inpainting_mask_invert: int = _default("inpainting_mask_invert", Img2ImgParams)
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class GenerationResponse(BaseModel):
    images: list[str] | None = Field(description="base64 PNGs (with their parameters chunk)")
    parameters: dict[str, Any]
    info: str = Field(description="JSON string; `infotexts` holds each picture's parameters text")


class _ExtrasCommon(_Request):
    resize_mode: int = Field(
        _default("resize_mode", ExtrasParams), description="0: scale by upscaling_resize, 1: scale to w x h"
    )
    show_extras_results: bool = True
    upscaling_resize: float = _default("upscaling_resize", ExtrasParams)
    upscaling_resize_w: int = _default("upscaling_resize_w", ExtrasParams)
    upscaling_resize_h: int = _default("upscaling_resize_h", ExtrasParams)
    upscaling_crop: bool = _default("upscaling_crop", ExtrasParams)
    upscaler_1: str = "None"  # A1111's API default (the Upscaling tab starts from Lanczos)
    upscaler_2: str = _default("upscaler_2", ExtrasParams)
    extras_upscaler_2_visibility: float = _default("upscaler_2_visibility", ExtrasParams)


class ExtrasSingleRequest(_ExtrasCommon):
    image: str = Field(description="base64 or data URL")


class FileData(BaseModel):
    data: str = Field(description="base64 or data URL")
    name: str = ""


class ExtrasBatchRequest(_ExtrasCommon):
    imageList: list[FileData]  # noqa: N815 - A1111's field name


class ExtrasSingleResponse(BaseModel):
    html_info: str
    image: str | None


class ExtrasBatchResponse(BaseModel):
    html_info: str
    images: list[str]


class PNGInfoRequest(_Request):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None
    textinfo: str | None
    queue_pending: int = Field(0, description="jobs waiting behind the current one")


class ControlNetDetectRequest(_Request):
    """The ControlNet extension's /controlnet/detect body; -1 means the preprocessor's default."""

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, description="base64 or data URLs")
    controlnet_processor_res: int = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(
        default_factory=list, description="ignored: no preprocessor takes one"
    )
    low_vram: bool = Field(False, description="ignored: the engine manages memory")


class ControlNetDetectResponse(BaseModel):
    images: list[str]
    info: str
