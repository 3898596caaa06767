"""Latents ↔ pictures through the model's VAE, and the extra inputs of inpainting UNets.

Stages 5 (decode) and 6 (to PIL) of every pipeline, and the encoder img2img and hires fix use.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from engine.models.manager import release_memory
from engine.models.memory_plan import free_bytes
from engine.models.types import LoadedModel
from engine.pipeline import vae_tiling
from engine.plugins import firing as stage_hooks
from engine.service.jobs import Job

# -- 5. decode ------------------------------------------------------------------------------------
UNET_NAN = (
    "The UNet produced NaN, so there is no picture to decode: in half precision its numbers overflow "
    "(try --precision fp32, or bf16 on a card that has it); at any precision an extreme CFG scale or "
    "LoRA weight can do it."
)
VAE_NAN = "The VAE produced NaN even in fp32: this VAE is broken; choose another in Settings (sd_vae)."
# Full-resolution activations a whole-picture VAE pass holds at its widest layer (input, normalised,
# activated, conv output and the residual, with the allocator's slack): the `auto` tiling estimate.
# Misjudged either way it costs little: an out-of-memory on the whole pass falls back to strips.
_ACTIVATIONS_AT_PEAK = 8


def decode(model: LoadedModel, latents: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor:
    """Latents → images in [0, 1], one image at a time (A1111 does: a batch's decode is a batch-
    sized memory spike). NaN latents are the UNet's failure and say so; a half-precision VAE that
    yields NaN (SD's 'black image' problem) is switched to fp32 for good and the image decoded again."""
    if not torch.isfinite(latents).all():
        raise ValueError(UNET_NAN)
    vae = model.vae
    z = latents / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    return torch.cat([_decode_one(model, one, notes) for one in z.split(1)])


def _decode_one(model: LoadedModel, z: torch.Tensor, notes: list[str] | None) -> torch.Tensor:
    images = _vae_pass(model, "decode", z.to(model.vae_dtype), notes)
    if not torch.isfinite(images).all() and model.vae_dtype != torch.float32:
        _vae_to_fp32(model, notes)
        images = _vae_pass(model, "decode", z.float(), notes)
    if not torch.isfinite(images).all():
        raise ValueError(VAE_NAN)
    return (images.float() / 2 + 0.5).clamp(0, 1)


def _vae_to_fp32(model: LoadedModel, notes: list[str] | None) -> None:
    # nn.Module.to, not ModelMixin.to: the latter logs a warning on every dtype cast.
    torch.nn.Module.to(model.vae, torch.float32)
    model.vae_dtype = torch.float32
    if notes is not None:
        notes.append("VAE produced NaN in half precision; switched the VAE to fp32")


def _vae_pass(model: LoadedModel, kind: str, x: torch.Tensor, notes: list[str] | None) -> torch.Tensor:
    """The VAE's decode (raw latents → [-1, 1] pictures) or encode (pictures → posterior moments),
    whole or in strips (engine.pipeline.vae_tiling) as `model.vae_policy.tiling` says: "auto" runs in
    strips when the whole pass would not fit in free memory, or when it runs out of memory."""
    vae = model.vae
    strips = vae_tiling.decode_in_strips if kind == "decode" else vae_tiling.encode_in_strips
    mode = model.vae_policy.tiling
    if mode == "always" or (mode == "auto" and not _fits(model, x, kind)):
        return strips(vae, x, model.device)
    try:
        if kind == "decode":
            return vae.decode(x).sample
        return vae.encode(x).latent_dist.parameters
    except (torch.OutOfMemoryError, MemoryError):
        if mode != "auto":
            raise
    release_memory(model.device)  # outside the except: the traceback holds the failed pass's tensors
    if notes is not None:
        notes.append(f"VAE {kind} ran out of memory on the whole picture; ran it in strips")
    return strips(vae, x, model.device)


def _fits(model: LoadedModel, x: torch.Tensor, kind: str) -> bool:
    """Whether a whole-picture pass fits the free memory of the VAE's device (estimate)."""
    height, width = x.shape[-2:]
    if kind == "decode":
        height, width = height * model.vae_scale_factor, width * model.vae_scale_factor
    channels = model.vae.config.block_out_channels[0]
    needed = _ACTIVATIONS_AT_PEAK * x.shape[0] * channels * height * width * x.element_size()
    return needed <= free_bytes(model.device)


def decode_with_hooks(model: LoadedModel, latents: torch.Tensor, notes: list[str], job: Job | None):
    """Stage 5 with the extensions' AFTER_DECODE."""
    return stage_hooks.after_decode(job, latents, decode(model, latents, notes))


def encode(model: LoadedModel, images: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor:
    """Images in [0, 1] → scaled latents, one image at a time. The posterior's mean, not a sample:
    the same picture and seed then give the same result on every run (A1111 samples with the
    global RNG). A half-precision VAE that overflows is switched to fp32, as in `decode`."""
    vae = model.vae
    channels = model.latent_channels
    means = []
    for image in (images * 2 - 1).split(1):
        moments = _vae_pass(model, "encode", image.to(model.device, model.vae_dtype), notes)
        if not torch.isfinite(moments).all() and model.vae_dtype != torch.float32:
            _vae_to_fp32(model, notes)
            moments = _vae_pass(model, "encode", image.to(model.device, torch.float32), notes)
        if not torch.isfinite(moments).all():
            raise ValueError(VAE_NAN)
        means.append(moments[:, :channels].float())
    z = torch.cat(means)
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
