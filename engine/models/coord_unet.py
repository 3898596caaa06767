"""A UNet2DConditionModel whose first convolution also sees where each pixel is.

Why: the built-in model has to turn words like "at the top left" into a place. A plain conv UNet
knows where a pixel is only through the zero padding at the border, and on our CPU budget it never
learned the mapping (x̂₀ error identical for the right and a wrong position phrase after 3 000
steps; see models/builtin/MODEL_CARD.md). Two fixed coordinate planes, x and y in [-1, 1] across
the frame (CoordConv, Liu et al. 2018), give every feature a position from the first layer on, so
cross-attention can route a position word to its place. The planes are relative to the frame, so
"top left" means the same at any resolution (hires fix, other sizes).

Only `conv_in` changes (its weight is [C, in + 2, k, k]); the class keeps UNet2DConditionModel's
signature, config keys, forward and state-dict names, so diffusers' single-file converter, the SD
key layout, pipelines and our sampler all treat it as the plain UNet it otherwise is. The sidecar
config names it by `_class_name`, which is how `unet_class_for_config` picks it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers import UNet2DConditionModel

COORD_CHANNELS = 2


def coordinate_planes(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: x then y, each spanning -1 (left / top) to 1 (right / bottom)."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    return torch.cat([xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], dim=1)


class CoordConv2d(torch.nn.Conv2d):
    """A Conv2d that appends `coordinate_planes` to its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([x, coordinate_planes(x)], dim=1))


class CoordUNet2DConditionModel(UNet2DConditionModel):
    """UNet2DConditionModel with a CoordConv2d `conv_in`; everything else unchanged."""

    # functools.wraps keeps the parent's signature visible to inspect.signature, which diffusers'
    # from_config uses to decide which config keys are constructor arguments.
    @functools.wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain = self.conv_in
        self.conv_in = CoordConv2d(
            plain.in_channels + COORD_CHANNELS,
            plain.out_channels,
            kernel_size=plain.kernel_size,
            padding=plain.padding,
        )


UNET_CLASSES: dict[str, type] = {
    "UNet2DConditionModel": UNet2DConditionModel,
    "CoordUNet2DConditionModel": CoordUNet2DConditionModel,
}


def unet_class_for_config(config: dict[str, Any]) -> type:
    """The UNet class a diffusers config declares; configs without a name get the plain UNet."""
    name = config.get("_class_name", "UNet2DConditionModel")
    if name not in UNET_CLASSES:
        raise ValueError(f"unsupported UNet class {name!r}; expected one of {sorted(UNET_CLASSES)}")
    return UNET_CLASSES[name]


def grow_conv_in(state: dict[str, torch.Tensor], unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`state` with a plain UNet's conv_in weight widened to `unet`'s input with zero columns for
    the coordinate planes: a plain model's weights then compute exactly what they did before,
    which lets a trained plain UNet be fine-tuned into a coordinate-aware one."""
    key = "conv_in.weight"
    wanted = unet.conv_in.weight.shape[1]
    weight = state.get(key)
    if weight is None or weight.shape[1] >= wanted:
        return state
    pad = weight.new_zeros((weight.shape[0], wanted - weight.shape[1], *weight.shape[2:]))
    return {**state, key: torch.cat([weight, pad], dim=1)}
