"""The bundled default model, so the app starts and generates with no download at all.

Until trained weights are committed, `ensure_builtin_model` creates a small SD1-architecture model
with random weights from a fixed seed: the whole pipeline (tokenizer → CLIP → UNet → VAE) runs
for real and fast on a CPU; the images are noise-like. It is written exactly like a user's
checkpoint (SD single-file layout, fp16 safetensors, plus a `<stem>.config/` sidecar with its
diffusers configs) so the built-in and user models load through the same code path. A file
already there (e.g. trained weights) is never overwritten.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.models.paths import BUILTIN_SUBDIR, models_root

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

    Sizes follow what a CPU training probe found workable (see shared PROBE notes): a ×8 VAE with
    ≥ 4 channels per GroupNorm group, a 64/128/128 UNet with cross-attention at 16×16 and 8×8
    (sample 16 → 128 px), and a 128-wide, 3-layer CLIP text encoder over the full CLIP vocabulary.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

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
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(64, 128, 128),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=128,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=128,
                intermediate_size=512,
                num_hidden_layers=3,
                num_attention_heads=4,
                vocab_size=49408,
                max_position_embeddings=77,
                projection_dim=128,
                hidden_act="quick_gelu",
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=1,
            )
        )
    return unet, vae, text_encoder


def ensure_builtin_model(root: Path | None = None) -> Path:
    """Path of `models/builtin/atelier-tiny.safetensors`, creating it (and its sidecar) if absent."""
    from engine.models.configs import write_config_folder
    from engine.models.ldm_convert import save_sd_checkpoint

    weights, sidecar = builtin_paths(root)
    if weights.is_file() and (sidecar / "model_index.json").is_file():
        return weights
    unet, vae, text_encoder = build_builtin_modules()
    if not (sidecar / "model_index.json").is_file():
        # configs first, in a temp folder renamed into place: the weights file appearing is the
        # signal that everything is ready, so it must come last
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=weights.parent, prefix=".atelier-tiny-"))
        try:
            write_config_folder(tmp / "cfg", unet, vae, text_encoder, SCHEDULER, "sd1")
            shutil.rmtree(sidecar, ignore_errors=True)
            shutil.move(str(tmp / "cfg"), str(sidecar))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not weights.is_file():
        save_sd_checkpoint(weights, unet, vae, text_encoder, "sd1", dtype=torch.float16)
    return weights
