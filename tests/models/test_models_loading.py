"""Loading checkpoints offline: single file and diffusers folder agree, bad files fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine.models.ldm_convert import vae_to_ldm
from engine.models.loaders import load_checkpoint, load_vae_file
from engine.models.registry import scan_checkpoints
from engine.models.state_dict import load_state_dict
from engine.models.types import CheckpointInfo, LoadedModel
from tests.fakes.tiny_models import TinyComponents, tiny_components, write_single_file

CPU = torch.device("cpu")


def _info(path: Path) -> CheckpointInfo:
    (info,) = [i for i in scan_checkpoints([path.parent]) if i.path == path]
    return info


def _load(path: Path, **kwargs: object) -> LoadedModel:
    return load_checkpoint(_info(path), CPU, torch.float32, torch.float32, **kwargs)  # type: ignore[arg-type]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_single_file_and_diffusers_folder_load_identical_weights(
    tiny_parts: TinyComponents, tiny_single_file: Path, tiny_diffusers_dir: Path
) -> None:
    single = _load(tiny_single_file)
    folder = _load(tiny_diffusers_dir)
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(single, name), getattr(folder, name))
        _assert_same_weights(getattr(single, name), getattr(tiny_parts, name))
    for model in (single, folder):
        assert model.family == "sd1" and model.prediction_type == "epsilon"
        assert model.alphas_cumprod.dtype == torch.float32 and model.alphas_cumprod.shape == (1000,)
        assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
        assert model.tokenizer.model_max_length == 77
        assert model.latent_channels == 4 and model.vae_scale_factor == 8 and model.native_size == 64
    assert single.short_hash != folder.short_hash and len(single.short_hash) == 10
    assert torch.equal(single.alphas_cumprod, folder.alphas_cumprod)
    # scaled_linear β 0.00085→0.012, the SD training schedule: ᾱ_0 = 1 − 0.00085
    assert single.alphas_cumprod[0].item() == pytest.approx(1 - 0.00085)
    sigma_max = ((1 - single.alphas_cumprod[-1]) / single.alphas_cumprod[-1]).sqrt().item()
    assert sigma_max == pytest.approx(14.6146, abs=1e-3)  # k-diffusion's well-known SD σ_max


def test_ckpt_and_fp16_files_load(tiny_parts: TinyComponents, tmp_path: Path) -> None:
    ckpt = write_single_file(tiny_parts, tmp_path / "pickled.ckpt")
    _assert_same_weights(_load(ckpt).unet, tiny_parts.unet)
    half = write_single_file(tiny_parts, tmp_path / "half.safetensors", dtype=torch.float16)
    model = load_checkpoint(_info(half), CPU, torch.float32, torch.float32)
    assert next(model.unet.parameters()).dtype == torch.float32
    expected = tiny_parts.unet.conv_in.weight.half().float()
    assert torch.equal(model.unet.conv_in.weight, expected)


def test_half_precision_and_fp32_vae(tiny_single_file: Path) -> None:
    model = load_checkpoint(_info(tiny_single_file), CPU, torch.bfloat16, torch.float32)
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    assert next(model.text_encoder.parameters()).dtype == torch.bfloat16
    assert next(model.vae.parameters()).dtype == torch.float32
    assert model.dtype == torch.bfloat16 and model.vae_dtype == torch.float32


def test_truncated_safetensors_is_a_clear_error(tiny_single_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_single_file.read_bytes()[:5000])
    with pytest.raises(ValueError, match="broken.safetensors.*truncated or corrupt"):
        load_state_dict(broken)
    with pytest.raises(ValueError, match="broken.safetensors"):
        _load(broken)


def test_malicious_ckpt_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, evil)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused to load evil.ckpt.*open"):
        load_state_dict(evil)
    with pytest.raises(ValueError, match="evil.ckpt"):
        _load(evil)
    assert not marker.exists()


def test_not_a_stable_diffusion_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a Stable Diffusion checkpoint"):
        _load(path)


def test_vae_override(tiny_single_file: Path, tiny_parts: TinyComponents, tmp_path: Path) -> None:
    other = tiny_components(seed=5).vae
    config_dir = tiny_single_file.with_name("tiny.config")
    from safetensors.torch import save_file

    for prefix in ("", "first_stage_model."):
        path = tmp_path / f"vae{len(prefix)}.safetensors"
        state = vae_to_ldm(other.state_dict(), other.config, prefix=prefix)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        _assert_same_weights(load_vae_file(path, config_dir), other)

    path = tmp_path / "vae0.safetensors"
    model = _load(tiny_single_file, vae_path=path)
    assert model.vae_name == "vae0.safetensors"
    _assert_same_weights(model.vae, other)
    _assert_same_weights(model.unet, tiny_parts.unet)


def test_inpainting_unet_is_recorded(tmp_path: Path) -> None:
    parts = tiny_components(seed=2, in_channels=9)
    model = _load(write_single_file(parts, tmp_path / "inpaint.safetensors"))
    assert model.is_inpainting and model.unet.config.in_channels == 9
    assert model.latent_channels == 4


def test_diffusers_pipeline_from_single_file_is_offline(tiny_single_file: Path, tmp_path: Path) -> None:
    """The documented alternative path (docs/design.md): whole-pipeline loading with a local config."""
    from diffusers import StableDiffusionPipeline

    copy = tmp_path / "copy.safetensors"
    shutil.copy(tiny_single_file, copy)
    pipe = StableDiffusionPipeline.from_single_file(
        str(copy),
        config=str(tiny_single_file.with_name("tiny.config")),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.unet.config.cross_attention_dim == 32
