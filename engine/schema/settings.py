"""User settings persisted to `config.json`, read once into an immutable snapshot (docs/design.md, example 8).

The Settings tab edits a copy and saves it; running jobs keep the snapshot they started with.
Unknown keys in config.json (from a newer version or an extension) are kept on save, not dropped.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.models.families import AESTHETIC_SCORES
from engine.schema.params import GenerationParams, Img2ImgParams, field_limits
from engine.schema.sampler_params import SamplerDefaults


def _like(name: str, description: str, cls: type[BaseModel] = GenerationParams, default: Any = None) -> Any:
    """A setting that starts a job's field: the field's range (and, unless given, its default) come
    from the parameter schema, where they are defined once."""
    limits = field_limits(name, cls)
    return Field(
        limits["default"] if default is None else default,
        description=description,
        ge=limits.get("minimum"),
        le=limits.get("maximum"),
    )


class Settings(SamplerDefaults):
    """Every user setting. The sampler parameters (inherited) are shown in the Sampler settings tab."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)  # no NaN or Infinity

    outdir_samples: str = Field(
        "", description="Output folder for all images (overrides the next ones if set)"
    )
    outdir_txt2img_samples: str = Field(
        "outputs/txt2img-images", description="Output folder for txt2img images"
    )
    outdir_img2img_samples: str = Field(
        "outputs/img2img-images", description="Output folder for img2img and inpainting images"
    )
    img2img_fix_steps: bool = Field(
        False, description="img2img: run exactly the steps on the slider (not denoising strength × steps)"
    )
    initial_noise_multiplier: float = _like(
        "initial_noise_multiplier",
        "img2img: multiply the initial noise by this (A1111: Noise multiplier)",
        Img2ImgParams,
        default=1.0,  # the job field's default is None: "the setting"
    )
    control_net_unit_count: int = Field(
        3, ge=1, le=10, description="ControlNet: units shown in txt2img / img2img (after a restart)"
    )
    outdir_extras_samples: str = Field(
        "outputs/extras-images", description="Output folder for the Upscaling tab"
    )
    ESRGAN_tile: int = Field(192, ge=0, le=2048, description="Upscaler tile size in px (0 = no tiling)")
    ESRGAN_tile_overlap: int = Field(8, ge=0, le=256, description="Upscaler tile overlap in px")
    upscaler_self_ensemble: Literal["Automatic", "Off", "2 passes", "8 passes"] = Field(
        "Automatic",
        description="Upscaler models: average each tile over flipped/rotated passes (n× the time, a "
        "little more accurate). Automatic: as the model file asks (the built-in ×4: 2 passes; others: off)",
    )
    upscale_max_pixels: int = Field(
        8192 * 8192,
        ge=64 * 64,
        description="Largest upscaled picture, in pixels (larger requests are refused)",
    )
    save_images: bool = Field(True, description="Save every generated image")
    samples_format: str = Field("png", pattern="^png$", description="File format for images")
    show_progress_every_n_steps: int = Field(
        5, ge=0, le=32, description="Live preview: decode a preview every N steps (0 = off)"
    )
    show_progress_type: Literal["Approx cheap", "Full"] = Field(
        "Approx cheap",
        description="Live preview: Approx cheap (no VAE, latent-sized: no memory spike while sampling) "
        "or Full (a VAE decode)",
    )
    default_sampler: str = _like("sampler_name", "Sampler selected when the UI opens")
    default_scheduler: str = _like("scheduler", "Schedule type selected when the UI opens")
    default_steps: int = _like("steps", "Steps when the UI opens")
    default_cfg_scale: float = _like("cfg_scale", "CFG scale when the UI opens")
    sd_checkpoint: str = Field("", description="Checkpoint to load at start (empty: the built-in model)")
    sd_vae: str = Field(
        "Automatic", description="VAE: Automatic (the checkpoint's own), None, or a file in models/VAE"
    )
    sd_vae_check_latents: bool = Field(
        True,
        description="Refuse a VAE that does not decode the checkpoint's latents "
        "(an SD 1.x VAE on SDXL, or the reverse)",
    )
    cross_attention_optimization: Literal["Automatic", "sdp", "xformers", "sliced", "None"] = Field(
        "Automatic",
        description="Attention: Automatic = xformers on CUDA when installed, else sdp (torch's "
        "scaled-dot-product); sliced uses the least memory",
    )
    fp8_storage: Literal["Disable", "Enable for SDXL", "Enable"] = Field(
        "Disable",
        description="FP8 weight: keep the UNet's weights in float8 (half the memory; pictures change, "
        "how much depends on the checkpoint); turning it off reloads the checkpoint",
    )
    channels_last: bool = Field(False, description="Channels-last memory format for the UNet")
    compile_unet: bool = Field(
        False,
        description="torch.compile the UNet: faster steps after a slow first job (compiled kernels "
        "are cached in the data folder for later starts)",
    )
    memory_plan: Literal["auto", "gpu-only", "medvram", "lowvram"] = Field(
        "auto",
        description="Memory plan on a GPU: auto picks one per job from the free memory (start flags "
        "--medvram, --lowvram, --medvram-sdxl, --gpu-only override this)",
    )
    vae_tiling: Literal["auto", "always", "never"] = Field(
        "auto",
        description="VAE in strips (same picture, less GPU memory): auto = when a picture would not "
        "fit, or on running out of memory",
    )
    sdxl_refiner_high_aesthetic_score: float = Field(
        AESTHETIC_SCORES[0],
        ge=0.0,
        le=10.0,
        description="SDXL refiner: the aesthetic score it sees for the prompt",
    )
    sdxl_refiner_low_aesthetic_score: float = Field(
        AESTHETIC_SCORES[1],
        ge=0.0,
        le=10.0,
        description="SDXL refiner: the aesthetic score it sees for the negative prompt",
    )
    use_checkpoint_preferences: bool = Field(
        True,
        description='Use a checkpoint\'s preferred sampler settings ("sampler settings" in the '
        "<checkpoint>.json beside it) for each sampler setting left at A1111's default",
    )

    @field_validator("upscaler_self_ensemble", mode="before")
    @classmethod
    def _ensemble_was_a_checkbox(cls, value: Any) -> Any:
        # Until 2026-11-23 this setting was a checkbox for all 8 passes: keep a saved true / false.
        if isinstance(value, bool):
            return "8 passes" if value else "Off"
        return value

    def txt2img_outdir(self, base: Path) -> Path:
        return self._outdir(base, self.outdir_txt2img_samples)

    def img2img_outdir(self, base: Path) -> Path:
        return self._outdir(base, self.outdir_img2img_samples)

    def extras_outdir(self, base: Path) -> Path:
        return self._outdir(base, self.outdir_extras_samples)

    def _outdir(self, base: Path, folder: str) -> Path:
        path = Path(self.outdir_samples or folder)
        return path if path.is_absolute() else base / path


def load_settings(path: Path) -> Settings:
    """Read config.json; a missing file gives the defaults, a broken one raises ValueError."""
    if not path.exists():
        return Settings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read settings from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return Settings.model_validate(data)


def save_settings(path: Path, settings: Settings) -> None:
    """Write atomically, keeping keys this version does not know."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(old, dict):
                data.update(old)
        except (OSError, json.JSONDecodeError):
            pass
    data.update(settings.model_dump())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
