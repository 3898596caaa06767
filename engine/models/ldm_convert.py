"""Diffusers state dicts → the original Stable Diffusion single-file (LDM) key layout.

The inverse of what diffusers' single-file loader reads, written from the LDM module structure:
  UNet  `model.diffusion_model.*`  (openaimodel.UNetModel: input_blocks / middle_block / output_blocks)
  VAE   `first_stage_model.*`      (encoder.down.N.block.M ..., decoder.up is numbered in reverse)
  CLIP  `cond_stage_model.transformer.text_model.*` (SD1, HF layout) or
        `cond_stage_model.model.*` (SD2, OpenCLIP layout with fused q/k/v); SDXL's two encoders
        under `conditioner.embedders.{0,1}` (engine.models.families says where)
Block counts come from the config and the keys themselves, so any size works, not only SD1.5's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

_RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_RESNET_VAE = {"conv_shortcut": "nin_shortcut"}  # norm1/conv1/norm2/conv2 keep their names
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_tail(tail: str, table: Mapping[str, str]) -> str:
    """Rename the module part of `module.param` (e.g. `time_emb_proj.weight`)."""
    for old, new in table.items():
        if tail.startswith(old + "."):
            return new + tail[len(old) :]
    return tail


def _layers_per_block(config: Mapping[str, Any], key: str = "layers_per_block") -> int:
    value = config[key]
    if not isinstance(value, int):
        raise ValueError("per-block layer counts are not supported by the LDM layout converter")
    return value


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel weights → `model.diffusion_model.*`."""
    layers = _layers_per_block(config)
    up_has_attention = {
        int(k.split(".")[1]) for k in state_dict if k.startswith("up_blocks.") and ".attentions." in k
    }
    fixed = {
        "conv_in.": "input_blocks.0.0.",
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL: pooled text + size ids
        "add_embedding.linear_2.": "label_emb.0.2.",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        new = None
        for old, ldm in fixed.items():
            if key.startswith(old):
                new = ldm + key[len(old) :]
        if new is None and parts[0] == "down_blocks":
            i, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":  # down_blocks.i.downsamplers.0.conv.* → input_blocks.K.0.op.*
                new = f"input_blocks.{(i + 1) * (layers + 1)}.0.op." + ".".join(parts[5:])
            else:
                j = int(parts[3])
                index = 1 + i * (layers + 1) + j
                tail = ".".join(parts[4:])
                if kind == "resnets":
                    new = f"input_blocks.{index}.0." + _rename_tail(tail, _RESNET_UNET)
                elif kind == "attentions":
                    new = f"input_blocks.{index}.1." + tail
        elif new is None and parts[0] == "mid_block":
            j, tail = int(parts[2]), ".".join(parts[3:])
            if parts[1] == "resnets":  # resnets 0 and 1 sit around the attention at index 1
                new = f"middle_block.{2 * j}." + _rename_tail(tail, _RESNET_UNET)
            elif parts[1] == "attentions":
                new = "middle_block.1." + tail
        elif new is None and parts[0] == "up_blocks":
            i, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":  # attached to the block's last layer, after its attention if any
                slot = 2 if i in up_has_attention else 1
                new = f"output_blocks.{i * (layers + 1) + layers}.{slot}.conv." + ".".join(parts[5:])
            else:
                j = int(parts[3])
                index = i * (layers + 1) + j
                tail = ".".join(parts[4:])
                if kind == "resnets":
                    new = f"output_blocks.{index}.0." + _rename_tail(tail, _RESNET_UNET)
                elif kind == "attentions":
                    new = f"output_blocks.{index}.1." + tail
        if new is None:
            raise ValueError(f"UNet key {key!r} has no LDM equivalent (unsupported block type?)")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], prefix: str = VAE_PREFIX
) -> dict[str, torch.Tensor]:
    """AutoencoderKL weights → `first_stage_model.*` (pass prefix="" for a standalone VAE file)."""
    n_blocks = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        side = parts[0]  # encoder | decoder | quant_conv | post_quant_conv
        new = None
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[1] in ("conv_in", "conv_out"):
            new = key
        elif parts[1] == "conv_norm_out":
            new = f"{side}.norm_out." + ".".join(parts[2:])
        elif parts[1] == "down_blocks":
            i = int(parts[2])
            if parts[3] == "downsamplers":
                new = f"{side}.down.{i}.downsample.conv." + ".".join(parts[6:])
            else:
                new = f"{side}.down.{i}.block.{parts[4]}." + _rename_tail(".".join(parts[5:]), _RESNET_VAE)
        elif parts[1] == "up_blocks":
            i = n_blocks - 1 - int(parts[2])  # LDM numbers decoder levels from the highest resolution
            if parts[3] == "upsamplers":
                new = f"{side}.up.{i}.upsample.conv." + ".".join(parts[6:])
            else:
                new = f"{side}.up.{i}.block.{parts[4]}." + _rename_tail(".".join(parts[5:]), _RESNET_VAE)
        elif parts[1] == "mid_block":
            tail = ".".join(parts[4:])
            if parts[2] == "resnets":
                new = f"{side}.mid.block_{int(parts[3]) + 1}." + _rename_tail(tail, _RESNET_VAE)
            elif parts[2] == "attentions":
                new = f"{side}.mid.attn_1." + _rename_tail(tail, _VAE_ATTENTION)
                if value.ndim == 2:  # LDM's attention projections are 1×1 convolutions
                    value = value[:, :, None, None]
        if new is None:
            raise ValueError(f"VAE key {key!r} has no LDM equivalent")
        out[prefix + new] = value
    return out


def text_encoder_to_ldm(
    state_dict: Mapping[str, torch.Tensor], family_name: str = "sd1", component: str = "text_encoder"
) -> dict[str, torch.Tensor]:
    """A text encoder's weights → where `family_name`'s single files keep `component`: transformers'
    CLIP names under the slot's prefix (SD1, SDXL's CLIP-L) or the OpenCLIP layout (SD2, SDXL's G,
    whose `text_projection` is stored as the transposed matrix).

    transformers ≥ 5.6 saves CLIPTextModel without the `text_model.` level; both forms are accepted.
    """
    from engine.models.families import family

    (slot,) = [s for s in family(family_name).encoders if s.component == component]
    flat = {k.removeprefix("text_model."): v for k, v in state_dict.items() if not k.endswith("position_ids")}
    if not slot.open_clip:
        return {slot.ldm_prefix + "text_model." + k: v for k, v in flat.items()}
    return _text_encoder_to_open_clip(flat, slot.ldm_prefix)


_OPEN_CLIP_FIXED = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _text_encoder_to_open_clip(flat: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        if key == "text_projection.weight":  # OpenCLIP multiplies x @ P: the Linear's weight transposed
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        if key in _OPEN_CLIP_FIXED:
            out[prefix + _OPEN_CLIP_FIXED[key]] = value
            continue
        parts = key.split(".")
        if parts[:2] != ["encoder", "layers"]:
            raise ValueError(f"text encoder key {key!r} has no OpenCLIP equivalent")
        layer, tail = parts[2], ".".join(parts[3:])
        block = f"{prefix}transformer.resblocks.{layer}."
        if tail.startswith("self_attn.") and tail.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            # OpenCLIP uses nn.MultiheadAttention: one fused in_proj in q, k, v order
            qkv.setdefault((block, parts[-1]), {})[tail.split(".")[1]] = value
            continue
        out[block + _rename_tail(tail, _OPEN_CLIP_LAYER)] = value
    for (block, param), pieces in qkv.items():
        out[f"{block}attn.in_proj_{param}"] = torch.cat(
            [pieces["q_proj"], pieces["k_proj"], pieces["v_proj"]]
        )
    return out


def diffusers_to_ldm(
    unet: Any, vae: Any, text_encoder: Any, family: str = "sd1", text_encoder_2: Any = None
) -> dict[str, torch.Tensor]:
    """One SD/SDXL single-file state dict from loaded diffusers/transformers modules
    (`text_encoder` None for the SDXL refiner, which has only `text_encoder_2`)."""
    combined = unet_to_ldm(unet.state_dict(), unet.config)
    combined.update(vae_to_ldm(vae.state_dict(), vae.config))
    for component, module in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
        if module is not None:
            combined.update(text_encoder_to_ldm(module.state_dict(), family, component))
    return {k: v.detach().contiguous() for k, v in combined.items()}


def save_sd_checkpoint(
    path: Path,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    family: str = "sd1",
    dtype: torch.dtype | None = None,
    text_encoder_2: Any = None,
) -> Path:
    """Write modules as an SD single file: `.safetensors` (atomically), or a `.ckpt` pickle of
    `{"state_dict": ...}` as LDM training saved them (tests use it; we never write pickles otherwise)."""
    state = diffusers_to_ldm(unet, vae, text_encoder, family, text_encoder_2)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={"format": "pt"})
        else:
            torch.save({"state_dict": state, "global_step": 0}, tmp)
        os.chmod(tmp, 0o644)  # mkstemp (and safetensors' writer) leave it owner-only: it is ordinary data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


CONTROLNET_PREFIX = "control_model."


def controlnet_to_ldm(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """ControlNetModel weights → the `control_model.*` single-file layout A1111 users have: the
    UNet encoder's LDM names, plus the hint encoder (`input_hint_block`, conv, SiLU, conv, ...),
    the zero convolutions (`zero_convs.N.0`) and `middle_block_out.0`."""
    encoder: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "controlnet_cond_embedding":
            if parts[1] == "conv_in":
                index = 0
            elif parts[1] == "blocks":
                index = 2 * (int(parts[2]) + 1)
            else:  # conv_out follows the last block
                blocks = {
                    int(k.split(".")[2])
                    for k in state_dict
                    if k.startswith("controlnet_cond_embedding.blocks.")
                }
                index = 2 * (len(blocks) + 1)
            out[f"input_hint_block.{index}.{parts[-1]}"] = value
        elif parts[0] == "controlnet_down_blocks":
            out[f"zero_convs.{parts[1]}.0.{parts[-1]}"] = value
        elif parts[0] == "controlnet_mid_block":
            out[f"middle_block_out.0.{parts[-1]}"] = value
        else:
            encoder[key] = value
    for key, value in unet_to_ldm(encoder, config).items():
        out[key[len(UNET_PREFIX) :]] = value
    return {CONTROLNET_PREFIX + k: v for k, v in out.items()}
