"""What a ControlNet file holds, read off its weights (or a folder's config) before anything is
built: its family, the single-file key layout turned into diffusers', and the architecture to build.

The family is told by the cross-attention width and, for SDXL, by the add embedding that takes the
pooled text and size ids (`label_emb` in the original layout, `add_embedding` in diffusers'), so an
SD 1.x ControlNet on an SDXL checkpoint is refused with both families named instead of failing on a
shape deep in the UNet. The architecture starts from the checkpoint's UNet (a ControlNet is a copy
of its encoder) and follows the weights where they differ: SDXL ControlNets often have fewer
transformer layers than the UNet (diffusers' "mid" and "small" ones), and an inpainting UNet takes
9 input channels where the ControlNets used with it take the 4 latent ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from engine.models.families import FAMILIES, SD1, SD2, SDXL, SDXL_REFINER

LDM_PREFIX = "control_model."
# SD 1.x/2.x have no add embedding: their cross-attention width (the text encoder's) names them.
PLAIN_BY_CONTEXT = {FAMILIES[name].context_dims[0]: FAMILIES[name].label for name in (SD1, SD2)}
_REFINER_CONTEXT = FAMILIES[SDXL_REFINER].context_dims[0]
_REFINER_TIME_IDS = FAMILIES[SDXL_REFINER].time_ids
# The original layout's add embedding (Linear, SiLU, Linear) → diffusers' TimestepEmbedding, which
# the single-file converter leaves out for ControlNets.
_ADD_EMBEDDING = {"label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2."}


@dataclass(frozen=True)
class Kind:
    """Which checkpoints a ControlNet fits: the text width it attends to and SDXL's add embedding."""

    context: int | None  # cross-attention width; None when no weight shows it
    added: int | None  # SDXL: the add embedding's input width (pooled text + time ids); None: SD 1.x/2.x
    time_dim: int | None = None  # width per time id (a config says it; weights do not)

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> Kind:
        """From a UNet's or ControlNet's diffusers config; another network (SD 3's MMDiT) has no
        cross-attention width, and no UNet ControlNet fits it."""
        if "cross_attention_dim" not in config:
            return cls(None, None)
        if config.get("addition_embed_type") != "text_time":
            return cls(int(config["cross_attention_dim"]), None)
        time_dim = config.get("addition_time_embed_dim")
        return cls(
            int(config["cross_attention_dim"]),
            int(config["projection_class_embeddings_input_dim"]),
            int(time_dim) if time_dim else None,
        )

    @classmethod
    def of_shapes(cls, shapes: Mapping[str, tuple[int, ...]]) -> Kind:
        """From weight shapes in either layout (a single file's header is enough)."""
        context = added = None
        for key, shape in shapes.items():
            if context is None and key.endswith("attn2.to_k.weight"):
                context = int(shape[1])
            elif added is None and key.endswith(("label_emb.0.0.weight", "add_embedding.linear_1.weight")):
                added = int(shape[1])
        return cls(context, added)

    @property
    def sdxl(self) -> bool:
        return self.added is not None

    @property
    def label(self) -> str:
        """The family's name as the UI gives it; a width nothing ships with is said as such."""
        if self.context is None and not self.sdxl:
            return "unknown"  # no cross-attention or add-embedding weight: not a ControlNet we know
        if not self.sdxl:
            return PLAIN_BY_CONTEXT.get(self.context, f"context {self.context}")
        # The refiner's one encoder (OpenCLIP-G) gives both its context and its pooled vector, so
        # its add embedding takes the context width plus 5 time ids; the real refiner is 1280 wide.
        refiner = self.context == _REFINER_CONTEXT or (
            self.time_dim is not None
            and self.added - (self.context or 0) == _REFINER_TIME_IDS * self.time_dim
        )
        return FAMILIES[SDXL_REFINER if refiner else SDXL].label

    def fits(self, unet: Kind) -> bool:
        return self.context in (None, unet.context) and self.added == unet.added


def mismatch(name: str, mine: Kind, unet: Kind, checkpoint: str | None = None) -> str | None:
    """Why the ControlNet `name` cannot steer a UNet of kind `unet` (None: it can). `checkpoint`:
    the loaded checkpoint's family label, used whenever SDXL is involved (the families differ in
    kind there, so widths alone would not say what is wrong)."""
    if mine.fits(unet):
        return None
    theirs = unet.label
    ours = mine.label
    if mine.sdxl or unet.sdxl:
        theirs = checkpoint or theirs
        if not mine.sdxl and mine.context not in PLAIN_BY_CONTEXT:
            ours = f"SD 1.x/2.x ({ours})"
    if ours == theirs:  # one family, other sizes (a custom or cut-down model): give the widths
        ours, theirs = f"{ours} ({_widths(mine)})", f"{theirs} ({_widths(unet)})"
    article = "an" if ours.startswith("SD") else "a"  # "an SDXL", "an SD 1.x", "a context 64"
    return f"{name} is {article} {ours} ControlNet; the loaded checkpoint is {theirs}"


def _widths(kind: Kind) -> str:
    return f"context {kind.context}" + (f", add embedding {kind.added}" if kind.sdxl else "")


def is_ldm(state: Mapping[str, Any]) -> bool:
    """The original (A1111 extension) layout: `control_model.*`, or its keys without the prefix."""
    return any(k.startswith((LDM_PREFIX, "time_embed.")) for k in state)


def ldm_to_diffusers(state: Mapping[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """Original-layout weights → diffusers' ControlNetModel names (diffusers converts the UNet
    encoder, hint encoder and zero convolutions; SDXL's add embedding is mapped here)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if any(k.startswith(LDM_PREFIX) for k in state):  # anything else in the file is not the ControlNet
        state = {k[len(LDM_PREFIX) :]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    added = {}
    for key, value in state.items():
        for old, new in _ADD_EMBEDDING.items():
            if key.startswith(old):
                added[new + key[len(old) :]] = value
    rest = {k: v for k, v in state.items() if not k.startswith("label_emb.")}
    return {**convert_controlnet_checkpoint(rest, {"layers_per_block": layers_per_block}), **added}


def architecture(state: Mapping[str, torch.Tensor], base: Mapping[str, Any]) -> dict[str, Any]:
    """The ControlNetModel config for diffusers-layout weights: `base` (the config the checkpoint's
    UNet gives) with the input widths, block kinds and transformer depths the weights have."""
    config = dict(base)
    config["in_channels"] = int(state["conv_in.weight"].shape[1])
    config["conditioning_channels"] = int(state["controlnet_cond_embedding.conv_in.weight"].shape[1])
    depths = [_depth(state, f"down_blocks.{i}.") for i in range(len(config["down_block_types"]))]
    mid = _depth(state, "mid_block.")
    config["down_block_types"] = ["DownBlock2D" if d is None else "CrossAttnDownBlock2D" for d in depths]
    config["mid_block_type"] = "UNetMidBlock2D" if mid is None else "UNetMidBlock2DCrossAttn"
    # diffusers gives the mid block the last entry's depth; blocks without attention ignore theirs
    config["transformer_layers_per_block"] = [(mid or 1) if d is None else d for d in depths]
    return config


def _depth(state: Mapping[str, Any], block: str) -> int | None:
    """Transformer layers in a block's (first) attention; None: the block has no attention (0 is
    an attention with its projections only, as in diffusers' small SDXL ControlNets)."""
    pattern = re.compile(re.escape(block) + r"attentions\.0\.(?:transformer_blocks\.(\d+)\.)?")
    found = [m for m in map(pattern.match, state) if m]
    if not found:
        return None
    return len({m.group(1) for m in found if m.group(1) is not None})
