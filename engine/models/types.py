"""Plain data types shared by the model registry, the loaders and the generation pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint found on disk (not loaded). `title` is what the UI shows and infotext names."""

    name: str  # file stem or folder name, e.g. "v1-5-pruned-emaonly"
    path: Path  # the .safetensors/.ckpt file, or the diffusers folder
    format: str  # "safetensors" | "ckpt" | "diffusers"
    size_bytes: int
    mtime: float

    @property
    def title(self) -> str:
        return self.name


@dataclass
class LoadedModel:
    """A checkpoint in memory, ready for the stage pipeline. Owned by the model manager."""

    info: CheckpointInfo
    short_hash: str  # A1111 "Model hash": first 10 hex digits of the file's SHA-256
    family: str  # "sd1" | "sd2"
    prediction_type: str  # "epsilon" | "v_prediction"
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer (model_max_length=77)
    alphas_cumprod: torch.Tensor  # float32 [T] from the model's training schedule
    device: torch.device
    dtype: torch.dtype  # UNet / text encoder dtype
    vae_dtype: torch.dtype
    vae_name: str | None = None  # VAE override file name, None = the checkpoint's own
    config_dir: Path | None = None  # diffusers config folder it was built from (VAE overrides reuse it)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        # The VAE's, not the UNet's input width: an inpainting UNet takes 9 (latent + mask + masked image).
        return int(self.vae.config.latent_channels)

    @property
    def is_inpainting(self) -> bool:
        config = getattr(self.unet, "config", None)  # test doubles may pass a bare function
        return int(getattr(config, "in_channels", 4)) == 9

    @property
    def native_size(self) -> int:
        """The resolution the model was trained at (UNet sample size × VAE factor)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor
