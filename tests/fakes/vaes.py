"""Trained VAEs in and out of one latent space, for the VAE-choice check (engine.models.vae_probe).

Random tiny VAEs reconstruct nothing, so they cannot show whether a decoder reads a latent space
right. These start from the built-in model's trained VAE: `other_latent_space` is as good a VAE
whose latent channels mean something else (the SD 1.x vs SDXL situation: one architecture, two
spaces), `fine_tuned` nudges the decoder only (an ft-MSE-style fine-tune of the same space).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from engine.models.builtin import builtin_paths


def builtin_vae() -> Any:
    from engine.models.loaders import load_vae_file

    return load_vae_file(*builtin_paths()).eval().requires_grad_(False)


@torch.no_grad()
def other_latent_space(vae: Any) -> Any:
    """The same VAE with its latent channels cycled and two of them negated: z' = P z. The encoder's
    1×1 `quant_conv` writes P·mean (and the matching log-variances), `post_quant_conv` reads Pᵀ z',
    so its own round trip is unchanged while every latent means something else to it."""
    other = copy.deepcopy(vae)
    channels = vae.config.latent_channels
    perm = torch.zeros(channels, channels)
    perm[torch.arange(channels), (torch.arange(channels) + 1) % channels] = 1
    perm[1::2] *= -1
    weight, bias = other.quant_conv.weight[:, :, 0, 0], other.quant_conv.bias
    means, logvars = slice(0, channels), slice(channels, 2 * channels)
    other.quant_conv.weight[means, :, 0, 0] = perm @ weight[means]
    other.quant_conv.weight[logvars, :, 0, 0] = perm.abs() @ weight[logvars]
    other.quant_conv.bias[means] = perm @ bias[means]
    other.quant_conv.bias[logvars] = perm.abs() @ bias[logvars]
    other.post_quant_conv.weight[:, :, 0, 0] = other.post_quant_conv.weight[:, :, 0, 0] @ perm.T
    return other


@torch.no_grad()
def fine_tuned(vae: Any, amount: float = 0.03, seed: int = 0) -> Any:
    """The decoder's weights moved by `amount` of each tensor's spread: same latent space."""
    tuned = copy.deepcopy(vae)
    generator = torch.Generator().manual_seed(seed)
    for param in tuned.decoder.parameters():
        if param.numel() > 1:
            param.add_(torch.randn(param.shape, generator=generator) * param.std() * amount)
    return tuned


def write_vae_file(vae: Any, path: Path) -> Path:
    """A standalone VAE file in the original key layout, as users download them."""
    from safetensors.torch import save_file

    from engine.models.ldm_convert import vae_to_ldm

    path.parent.mkdir(parents=True, exist_ok=True)
    state = vae_to_ldm(vae.state_dict(), vae.config, prefix="")
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
