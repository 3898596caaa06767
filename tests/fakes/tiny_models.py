"""Tiny seeded SD components for CPU tests (diffusers' `get_dummy_components` style).

Same architecture family as SD (×8 VAE with 4 latent channels, UNet with cross-attention, CLIP
text encoder with the real 49,408-token vocabulary) at a size that builds and runs in well under
a second. Helpers write them as a diffusers folder and as an SD-layout single file with a
sidecar config folder, the two forms the loaders must treat alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass
class TinyComponents:
    unet: Any
    vae: Any
    text_encoder: Any  # None for the SDXL refiner
    family: str
    prediction_type: str
    text_encoder_2: Any = None  # SDXL's OpenCLIP-G stand-in

    def scheduler_config(self) -> dict[str, Any]:
        return {**SCHEDULER_CONFIG, "prediction_type": self.prediction_type}


def tiny_components(
    seed: int = 0,
    family: str = "sd1",
    prediction_type: str = "epsilon",
    in_channels: int = 4,
    coords: bool = False,
) -> TinyComponents:
    """`coords`: the built-in model's coordinate-aware UNet instead of the plain one."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from engine.models.coord_unet import CoordUNet2DConditionModel

    if family.startswith("sdxl"):
        return tiny_sdxl_components(seed, family, prediction_type, in_channels)
    torch.manual_seed(seed)
    sd2 = family == "sd2"
    unet_class = CoordUNet2DConditionModel if coords else UNet2DConditionModel
    unet = unet_class(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
        use_linear_projection=sd2,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(_clip_config(32, "gelu" if sd2 else "quick_gelu", layers=2))
    for module in (unet, vae, text_encoder):
        module.eval()
    return TinyComponents(unet, vae, text_encoder, family, prediction_type)


def _tiny_vae(latent_channels: int = 4, **config: Any):
    """An ×8 VAE in small; `config`: more AutoencoderKL settings (SD 3's and Flux's factors)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
        **config,
    )


def _clip_config(width: int, act: str, layers: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=width,
        hidden_act=act,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


CLIP_L_WIDTH, CLIP_G_WIDTH, TIME_DIM = 32, 48, 8  # two widths, so the encoders cannot be confused


def tiny_sdxl_components(
    seed: int = 0, family: str = "sdxl", prediction_type: str = "epsilon", in_channels: int = 4
) -> TinyComponents:
    """SDXL's architecture in small (diffusers' SDXL test components, with two text-encoder
    widths): a UNet with "text_time" added conditioning and a two-level transformer block, CLIP-L
    and OpenCLIP-G stand-ins (3 layers, so the penultimate layer is an inner one); the refiner
    has only the G encoder and 5 time ids (size, crop, aesthetic score) instead of 6."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from engine.models.families import FAMILIES

    torch.manual_seed(seed)
    refiner = family == "sdxl-refiner"
    context = CLIP_G_WIDTH if refiner else CLIP_L_WIDTH + CLIP_G_WIDTH
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=CLIP_G_WIDTH + TIME_DIM * FAMILIES[family].time_ids,
        cross_attention_dim=context,
        norm_num_groups=8,
    )
    vae = _tiny_vae()
    clip_l = None if refiner else CLIPTextModel(_clip_config(CLIP_L_WIDTH, "quick_gelu", layers=3))
    clip_g = CLIPTextModelWithProjection(_clip_config(CLIP_G_WIDTH, "gelu", layers=3))
    for module in (unet, vae, clip_l, clip_g):
        if module is not None:
            module.eval()
    return TinyComponents(unet, vae, clip_l, family, prediction_type, clip_g)


def write_configs(parts: TinyComponents, folder: Path, with_tokenizer: bool = True) -> Path:
    """model_index.json + component configs (+ tokenizer) in diffusers layout, no weights."""
    from engine.models.configs import write_config_folder

    return write_config_folder(
        folder,
        parts.unet,
        parts.vae,
        parts.text_encoder,
        parts.scheduler_config(),
        parts.family,
        with_tokenizer=with_tokenizer,
        text_encoder_2=parts.text_encoder_2,
    )


def write_diffusers_folder(parts: TinyComponents, folder: Path) -> Path:
    write_configs(parts, folder)
    parts.unet.save_pretrained(folder / "unet")
    parts.vae.save_pretrained(folder / "vae")
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(parts, name) is not None:
            getattr(parts, name).save_pretrained(folder / name)
    return folder


def write_single_file(
    parts: TinyComponents,
    path: Path,
    *,
    sidecar: str | None = ".config",
    dtype: torch.dtype | None = None,
) -> Path:
    """SD-layout `.safetensors` or `.ckpt` (by suffix), with a `<stem><sidecar>/` config folder
    unless `sidecar` is None."""
    from engine.models.ldm_convert import save_sd_checkpoint

    save_sd_checkpoint(
        path, parts.unet, parts.vae, parts.text_encoder, parts.family, dtype, parts.text_encoder_2
    )
    if sidecar is not None:
        write_configs(parts, path.with_name(path.stem + sidecar))
    return path


def load_tiny(path: Path, dtype=torch.float32, vae_dtype=torch.float32):
    """A tiny checkpoint on disk, loaded on the CPU through the app's own scan and loader."""
    from engine.models.loaders import load_checkpoint
    from engine.models.registry import scan_folder

    (info,) = [i for i in scan_folder(path.parent) if i.path == path]
    return load_checkpoint(info, "cpu", dtype, vae_dtype)


def tiny_params(**kw):
    """txt2img parameters sized for the tiny model (64², 4 steps), `kw` changing any of them."""
    from engine.schema.params import GenerationParams

    base = dict(
        prompt="a red circle",
        negative_prompt="blurry",
        steps=4,
        sampler_name="Euler a",
        cfg_scale=7,
        seed=42,
        width=64,
        height=64,
    )
    return GenerationParams(**{**base, **kw})


def tiny_controlnet(unet, seed: int):
    """A ControlNet shaped for `unet` whose zero convolutions are not zero (a fresh one does nothing)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet, load_weights_from_unet=True)
    with torch.no_grad():
        for block in [*cn.controlnet_down_blocks, cn.controlnet_mid_block]:
            block.weight.normal_(0, 0.5)
    return cn.eval()
