"""The bundled default model, so the app starts and draws with no download at all.

`models/builtin/atelier-tiny.safetensors` holds weights Atelier trained itself on its synthetic
world (`tools/train_default_model.py`; see `models/builtin/MODEL_CARD.md`). It is stored exactly
like a user's checkpoint — SD single-file key layout, fp16 safetensors, plus a `<stem>.config/`
sidecar of diffusers configs — so it loads through the same registry and loader as any SD 1.5 file.
This module also defines its architecture, which the training code builds and fills.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from engine.models.paths import BUILTIN_SUBDIR, models_root

log = logging.getLogger(__name__)

BUILTIN_NAME = "atelier-tiny"
SEED = 20240601

SCHEDULER: dict[str, Any] = {
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
    "trained_betas": None,
}


def builtin_paths(root: Path | None = None) -> tuple[Path, Path]:
    """(weights file, sidecar config folder) of the built-in model."""
    folder = models_root(root) / BUILTIN_SUBDIR
    return folder / f"{BUILTIN_NAME}.safetensors", folder / f"{BUILTIN_NAME}.config"


def build_builtin_modules(seed: int = SEED) -> tuple[Any, Any, Any]:
    """(unet, vae, text_encoder) of the built-in architecture, randomly initialised from `seed`.

    Sized for training on a 2-core CPU and a ≤ 25 MB fp16 bundle: a ×8 VAE (4 blocks, ~1 M
    parameters), a 64/128/128 UNet with cross-attention at 16×16 and 8×8 (sample 16 → 128 px,
    ~5.9 M) whose first convolution also reads x/y coordinate planes (`coord_unet`: how position
    words become places), and a 64-wide, 4-layer CLIP text encoder over the full 49 408-token CLIP
    vocabulary — the vocabulary table dominates its size, hence the narrow width (128 wide would
    not fit).
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.models.coord_unet import CoordUNet2DConditionModel

    # fork_rng: seeding must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64, 64, 64),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=128,
            scaling_factor=0.18215,
        )
        unet = CoordUNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(64, 128, 128),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=64,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=64,
                intermediate_size=256,
                num_hidden_layers=4,
                num_attention_heads=4,
                vocab_size=49408,
                max_position_embeddings=77,
                projection_dim=64,
                hidden_act="quick_gelu",
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=1,
            )
        )
    return unet, vae, text_encoder


def builtin_model_path(root: Path | None = None) -> Path | None:
    """The shipped weights file, or None (with a log line) when the install lacks it."""
    weights, sidecar = builtin_paths(root)
    if weights.is_file() and (sidecar / "model_index.json").is_file():
        return weights
    log.warning("built-in model missing at %s; put a checkpoint in models/Stable-diffusion", weights)
    return None
