"""The shipped configs describe the real SD architectures, and our LDM converter writes the real
SD key layout for them. Built on the meta device: no weights, milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.models.configs import alphas_cumprod_from_config, shipped_config_dir
from engine.models.ldm_convert import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from engine.models.paths import configs_root


def _meta_modules(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    return unet, vae, text


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "unet_params", "text_params"),
    [
        ("sd1", 859_520_964, 123_060_480),
        ("sd2", 865_910_724, 340_387_840),
        ("sd2-v", 865_910_724, 340_387_840),
    ],
)
def test_shipped_architectures_have_the_known_sizes(name: str, unet_params: int, text_params: int) -> None:
    unet, vae, text = _meta_modules(configs_root() / name)
    assert (_count(unet), _count(vae), _count(text)) == (unet_params, 83_653_863, text_params)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_shipped_schedulers_and_tokenizers() -> None:
    sd1 = shipped_config_dir("sd1")
    sched = _json(sd1 / "scheduler" / "scheduler_config.json")
    assert (sched["beta_start"], sched["beta_end"]) == (0.00085, 0.012)
    assert sched["beta_schedule"] == "scaled_linear"
    assert sched["steps_offset"] == 1 and sched["prediction_type"] == "epsilon"
    v = shipped_config_dir("sd2", "v_prediction")
    assert _json(v / "scheduler" / "scheduler_config.json")["prediction_type"] == "v_prediction"
    assert _json(v / "unet" / "config.json")["sample_size"] == 96
    assert _json(v / "tokenizer" / "special_tokens_map.json")["pad_token"] == "!"
    assert _json(sd1 / "tokenizer" / "special_tokens_map.json")["pad_token"] == "<|endoftext|>"
    index = _json(sd1 / "model_index.json")
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    with pytest.raises(ValueError, match="no shipped config"):
        shipped_config_dir("sd1", "v_prediction")


def test_sd1_ldm_layout_matches_the_original_checkpoint_keys() -> None:
    unet, vae, text = _meta_modules(configs_root() / "sd1")
    ldm_unet = unet_to_ldm(unet.state_dict(), unet.config)
    ldm_vae = vae_to_ldm(vae.state_dict(), vae.config)
    ldm_text = text_encoder_to_ldm(text.state_dict(), "sd1")
    # v1-5-pruned-emaonly: 686 UNet, 248 VAE, 196 CLIP tensors (+ position_ids, which we omit)
    assert (len(ldm_unet), len(ldm_vae), len(ldm_text)) == (686, 248, 196)
    expected_shapes = {
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.time_embed.2.weight": (1280, 1280),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    }
    merged = {**ldm_unet, **ldm_vae, **ldm_text}
    for key, shape in expected_shapes.items():
        assert tuple(merged[key].shape) == shape, key
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in merged


def test_sd2_text_encoder_uses_the_open_clip_layout() -> None:
    _, _, text = _meta_modules(configs_root() / "sd2")
    ldm = text_encoder_to_ldm(text.state_dict(), "sd2")
    fused = ldm["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert tuple(fused.shape) == (3072, 1024)
    assert tuple(ldm["cond_stage_model.model.positional_embedding"].shape) == (77, 1024)
    assert "cond_stage_model.model.transformer.resblocks.22.mlp.c_proj.bias" in ldm


def test_alphas_cumprod_linear_and_trained_betas() -> None:
    linear = alphas_cumprod_from_config({"beta_schedule": "linear", "beta_start": 0.1, "beta_end": 0.1})
    assert linear[2].item() == pytest.approx(0.9**3)
    trained = alphas_cumprod_from_config({"trained_betas": [0.5, 0.5]})
    assert trained.tolist() == [0.5, 0.25]
