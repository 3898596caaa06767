"""Latents ↔ pictures through the model's VAE, and the extra inputs of inpainting UNets.

Stages 5 (decode) and 6 (to PIL) of every pipeline, and the encoder img2img and hires fix use.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from engine.models.types import LoadedModel
from engine.plugins import firing as stage_hooks
from engine.service.jobs import Job


# -- 5. decode ------------------------------------------------------------------------------------
def decode(model: LoadedModel, latents: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor:
    """Latents → images in [0, 1]. A half-precision VAE that yields NaN (SD's 'black image'
    problem) is switched to fp32 for good and the batch is decoded again."""
    vae = model.vae
    z = latents / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    images = vae.decode(z.to(model.vae_dtype)).sample
    if not torch.isfinite(images).all() and model.vae_dtype != torch.float32:
        # nn.Module.to, not ModelMixin.to: the latter logs a warning on every dtype cast.
        torch.nn.Module.to(model.vae, torch.float32)
        model.vae_dtype = torch.float32
        if notes is not None:
            notes.append("VAE produced NaN in half precision; switched the VAE to fp32")
        images = model.vae.decode(z.float()).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


def decode_with_hooks(model: LoadedModel, latents: torch.Tensor, notes: list[str], job: Job | None):
    """Stage 5 with the extensions' AFTER_DECODE."""
    return stage_hooks.after_decode(job, latents, decode(model, latents, notes))


def encode(model: LoadedModel, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → scaled latents. The posterior's mean, not a sample: the same picture
    and seed then give the same result on every run (A1111 samples with the global RNG)."""
    vae = model.vae
    dist = vae.encode((images * 2 - 1).to(model.device, model.vae_dtype)).latent_dist
    z = dist.mean.float()
    if getattr(vae.config, "shift_factor", None):
        z = z - vae.config.shift_factor
    return z * vae.config.scaling_factor


def inpaint_conditioning(model: LoadedModel, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The 5 extra input channels of an SD inpainting UNet: [mask, latents of the masked image].
    `images` in [0, 1] (N, 3, H, W); `mask` (N or 1, 1, H, W), 1 = repaint. The masked image is
    the picture with the repainted area set to 0 in [-1, 1] (mid-grey), as the model was trained."""
    mask = mask.round().to(images)
    masked = images * (1 - mask) + 0.5 * mask
    latents = encode(model, masked)
    small = torch.nn.functional.interpolate(mask, size=latents.shape[-2:]).expand(latents.shape[0], 1, -1, -1)
    return torch.cat([small.to(latents), latents], dim=1)


def txt2img_conditioning(model: LoadedModel, batch: int, height: int, width: int) -> torch.Tensor | None:
    """An inpainting model run without a picture: everything masked, the masked image all grey."""
    if not model.is_inpainting:
        return None
    grey = torch.full((1, 3, height, width), 0.5, device=model.device)
    mask = torch.ones((1, 1, height, width), device=model.device)
    return inpaint_conditioning(model, grey, mask).expand(batch, -1, -1, -1)


# -- 6. postprocess -------------------------------------------------------------------------------
def to_tensor(pictures: list[Image.Image], device: torch.device) -> torch.Tensor:
    """Pictures → a float batch in [0, 1], NCHW, on `device` (what `encode` takes)."""
    arrays = [np.asarray(p.convert("RGB"), dtype=np.float32) / 255.0 for p in pictures]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]
