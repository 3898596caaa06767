"""What kind of model a checkpoint is, decided from its state-dict keys (never from class names).

The family comes from where the text encoders sit (`engine.models.families.family_of_keys`): SD1
`cond_stage_model.transformer.*`, SD2 `cond_stage_model.model.*`, SDXL `conditioner.embedders.{0,1}`,
the SDXL refiner only `conditioner.embedders.0.model.*`. An inpainting UNet takes 9 input channels
(latent + mask + masked-image latent), in every family.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.models.families import family_of_keys

UNET_PREFIX = "model.diffusion_model."
UNET_CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"

EPSILON, V_PREDICTION = "epsilon", "v_prediction"
FLOW_PREDICTION = "flow"  # rectified flow (SD 3, Flux): the network predicts the velocity ε − x₀
# SDXL v-prediction fine-tunes (NoobAI-XL v-pred and others) mark themselves with an empty `v_pred`
# tensor; A1111 and Forge read it the same way.
V_PRED_KEY = "v_pred"
ZTSNR_KEY = "ztsnr"  # and, beside it, `ztsnr`: trained on a zero-terminal-SNR schedule


@dataclass(frozen=True)
class ModelTraits:
    family: str  # engine.models.families: "sd1" | "sd2" | "sdxl" | "sdxl-refiner"
    context_dim: (
        int | None
    )  # cross-attention width of the UNet (768 SD1, 1024 SD2, 2048 SDXL; small for tiny models)
    unet_in_channels: int  # 4, or 9 for inpainting models
    prediction_type: str | None = None  # declared by the file itself (a `v_pred` key), else None
    zero_terminal_snr: bool = False  # a `ztsnr` key: the training schedule ends in pure noise

    @property
    def inpainting(self) -> bool:
        return self.unet_in_channels == 9


def detect_traits(shapes: Mapping[str, Any], name: str = "checkpoint") -> ModelTraits:
    """Family, context dim and UNet input channels from `{key: shape-or-tensor}` of an SD-layout file."""
    try:
        family = family_of_keys(shapes.keys()).name
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None
    if UNET_CONV_IN not in shapes:
        raise ValueError(f"{name} has no UNet weights ({UNET_CONV_IN} missing)")
    in_channels = int(_shape(shapes[UNET_CONV_IN])[1])
    context_dim = None
    for key, value in shapes.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            context_dim = int(_shape(value)[1])
            break
    prediction = V_PREDICTION if V_PRED_KEY in shapes else None
    return ModelTraits(family, context_dim, in_channels, prediction, ZTSNR_KEY in shapes)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)


_PARAMETERIZATION = re.compile(r"^\s*parameterization:\s*[\"']?(\w+)[\"']?\s*(#.*)?$", re.MULTILINE)


def prediction_from_yaml(weights: Path) -> str | None:
    """`<stem>.yaml` beside the checkpoint (A1111/LDM convention): `parameterization: "v"` means v.

    Read with a regex rather than a YAML parser: the only field we need is one flat line, and the
    LDM configs carry `target:` class paths we must never instantiate anyway.
    """
    yaml_path = weights.with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    match = _PARAMETERIZATION.search(yaml_path.read_text(encoding="utf-8", errors="replace"))
    if match is None:
        return None
    return V_PREDICTION if match.group(1) == "v" else EPSILON


@torch.no_grad()
def looks_like_v_prediction(unet: Any) -> bool:
    """A1111's test for SD2 checkpoints with no yaml: feed a flat 0.5 latent and a flat 0.5
    context at t=999 and call it v-prediction when mean(out − x) < −1.

    At the last timestep an ε-model's output stays near its (noise-like) input; a v-model's
    output is pulled far below it. Crude, but it is the rule A1111 users' files were sorted by,
    so matching it keeps our choice the same as theirs. Runs in the UNet's dtype/device.
    """
    param = next(unet.parameters())
    config = getattr(unet, "config", None)
    in_channels = int(getattr(config, "in_channels", 4))
    context_dim = int(getattr(config, "cross_attention_dim", 1024) or 1024)
    x = torch.full((1, in_channels, 8, 8), 0.5, device=param.device, dtype=param.dtype)
    cond = torch.full((1, 2, context_dim), 0.5, device=param.device, dtype=param.dtype)
    t = torch.tensor([999], device=param.device)
    out = unet(x, t, encoder_hidden_states=cond)
    out = out.sample if hasattr(out, "sample") else out
    return bool((out.float() - x[:, : out.shape[1]].float()).mean() < -1)
