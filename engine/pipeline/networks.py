"""How each family's denoising network is called: the one place that knows a UNet from an MMDiT.

`network_call(model, ...)` returns the function `SigmaDenoiser` calls, (x, t, cond) → the network's
prediction as float32, with the family's extra inputs filled in. The family names its network
(`Family.network`); adding a family with a new network is one function here and one table row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.conditioning.text_cond import TextCond
from engine.controlnet.apply import ControlNetStack
from engine.models.families import AESTHETIC_SCORES
from engine.models.types import LoadedModel

NetworkFn = Callable[..., torch.Tensor]


def unet_call(
    model: LoadedModel,
    image_cond: torch.Tensor | None,
    control: ControlNetStack | None,
    aesthetic: tuple[float, float],
    guidance: float,
) -> NetworkFn:
    """SD 1.x/2.x and SDXL: the UNet, with ControlNet residuals and an inpainting UNet's extra
    channels (`image_cond`, one row per image, tiled over the CFG batch)."""
    spec, factor = model.spec, model.vae_scale_factor

    def unet(
        x: torch.Tensor, t: torch.Tensor, cond: TextCond, uncond_count: int = 0, t_value: float | None = None
    ) -> torch.Tensor:
        # the family's extra inputs (SDXL: pooled text + size ids at this picture's size, so the
        # hires pass and SD upscale's tiles are conditioned on their own size, as in A1111)
        height, width = x.shape[-2] * factor, x.shape[-1] * factor
        kwargs = spec.added_cond(cond.pooled, x.shape[0], height, width, uncond_count, aesthetic)
        residuals = control(x, t, cond, uncond_count, kwargs, t_value) if control is not None else None
        if residuals is not None:
            down, mid = residuals
            kwargs["down_block_additional_residuals"] = [r.to(model.dtype) for r in down]
            kwargs["mid_block_additional_residual"] = mid.to(model.dtype)
        if image_cond is not None:
            extra = image_cond.to(x).repeat(x.shape[0] // image_cond.shape[0], 1, 1, 1)
            x = torch.cat([x, extra], dim=1)
        hidden = cond.hidden.to(model.dtype)
        return model.unet(x.to(model.dtype), t, encoder_hidden_states=hidden, return_dict=False, **kwargs)[
            0
        ].float()

    return unet


def _refuse_unet_inputs(model: LoadedModel, image_cond: torch.Tensor | None, control: object) -> None:
    label = model.spec.label
    if control is not None:
        raise ValueError(f"ControlNet does not work with {label} models yet: turn the units off")
    if image_cond is not None:
        raise ValueError(f"{label} has no inpainting model: inpaint with the model itself")


def mmdit_call(
    model: LoadedModel,
    image_cond: torch.Tensor | None,
    control: ControlNetStack | None,
    aesthetic: tuple[float, float],
    guidance: float,
) -> NetworkFn:
    """SD 3 / 3.5: the MMDiT takes the joint token sequence and the pooled CLIP embedding."""
    label = model.spec.label
    _refuse_unet_inputs(model, image_cond, control)

    def mmdit(
        x: torch.Tensor, t: torch.Tensor, cond: TextCond, uncond_count: int = 0, t_value: float | None = None
    ) -> torch.Tensor:
        if cond.pooled is None:
            raise ValueError(f"{label} needs a pooled text embedding")
        return model.unet(
            hidden_states=x.to(model.dtype),
            timestep=t,
            encoder_hidden_states=cond.hidden.to(model.dtype),
            pooled_projections=cond.pooled.to(model.dtype),
            return_dict=False,
        )[0].float()

    return mmdit


def flux_call(
    model: LoadedModel,
    image_cond: torch.Tensor | None,
    control: ControlNetStack | None,
    aesthetic: tuple[float, float],
    guidance: float,
) -> NetworkFn:
    """Flux.1: the latents go in as a sequence of 2×2 patches (64 values each for 16 channels)
    with their (row, column) ids, T5's tokens with zero ids, CLIP's pooled output and, on dev, the
    distilled guidance ("Distilled CFG Scale") as an input of its own."""
    _refuse_unet_inputs(model, image_cond, control)
    transformer = model.unet
    distilled = bool(getattr(transformer.config, "guidance_embeds", False))
    ids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # made once per size, not every step

    def positions(h: int, w: int, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (h, w, tokens, device)
        if key not in ids:
            rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
            image_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
            text_ids = torch.zeros(tokens, 3)
            ids[key] = (image_ids.to(device, model.dtype), text_ids.to(device, model.dtype))
        return ids[key]

    def flux(
        x: torch.Tensor, t: torch.Tensor, cond: TextCond, uncond_count: int = 0, t_value: float | None = None
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError("Flux needs a width and height that are multiples of 16 px")
        patches = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, h * w // 4, c * 4)
        image_ids, text_ids = positions(h, w, cond.hidden.shape[1], x.device)
        dtype = model.dtype
        out = transformer(
            hidden_states=patches.to(dtype),
            timestep=t.to(dtype),
            guidance=torch.full((b,), guidance, device=x.device) if distilled else None,
            pooled_projections=cond.pooled.to(dtype),
            encoder_hidden_states=cond.hidden.to(dtype),
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        return out.float().reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    return flux


NETWORKS: dict[str, Callable[..., NetworkFn]] = {"unet": unet_call, "sd3": mmdit_call, "flux": flux_call}
DISTILLED_CFG = 3.5  # Forge's default "Distilled CFG Scale"


def network_call(
    model: LoadedModel,
    image_cond: torch.Tensor | None = None,
    control: ControlNetStack | None = None,
    aesthetic: tuple[float, float] = AESTHETIC_SCORES,
    guidance: float = DISTILLED_CFG,
) -> NetworkFn:
    """`guidance`: the distilled guidance of models that take it as an input (Flux dev)."""
    return NETWORKS[model.spec.network](model, image_cond, control, aesthetic, guidance)
