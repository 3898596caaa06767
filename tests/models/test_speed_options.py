"""The speed and precision options (engine.models.speed) on the CPU: each attention kind draws the
same picture, FP8 weights halve the UNet's weight memory and stay close, a LoRA works on them and
turning FP8 off reloads full precision; channels-last changes no pixel; a bf16 request on a GPU
without bf16 is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.models import speed
from engine.models.memory_plan import module_bytes
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams
from tests.fakes.tiny_models import load_tiny
from tests.fakes.tiny_models import tiny_params as params


@pytest.fixture
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


def draw(model, **kw) -> np.ndarray:
    return np.asarray(txt2img(model, params(seed=11, **kw)).images[0], dtype=np.int16)


def test_automatic_attention_on_a_cpu_is_sdp_and_xformers_needs_a_gpu():
    cpu = torch.device("cpu")
    assert speed.attention_for("Automatic", cpu) == "sdp"
    with pytest.raises(ValueError, match="xformers attention needs"):
        speed.attention_for("xformers", cpu)
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        speed.attention_for("flash", cpu)


@pytest.mark.parametrize("attention", ["sliced", "None"])
def test_every_attention_draws_the_same_picture(model, attention):
    from diffusers.models.attention_processor import AttnProcessor, SlicedAttnProcessor

    expected = draw(model)
    speed.apply(model, speed.SpeedOptions(attention=attention))
    processors = set(map(type, model.unet.attn_processors.values()))
    assert processors == {SlicedAttnProcessor if attention == "sliced" else AttnProcessor}
    assert np.abs(draw(model) - expected).max() <= 1
    speed.apply(model, speed.SpeedOptions(attention="sdp"))  # and back
    assert np.array_equal(draw(model), expected)


def test_fp8_weights_are_the_weights_rounded_to_fp8(builtin_model):
    """The UNet computes in the model dtype with each stored weight rounded to float8 e4m3fn: its
    output equals a full-precision UNet whose weights were rounded the same way. (On the small
    built-in model that rounding changes pictures a lot; its weights are small.)"""
    stored = dataclasses.replace(builtin_model, unet=_copy(builtin_model.unet), speed=None)
    before = module_bytes([stored.unet])
    applied = speed.apply(stored, speed.SpeedOptions(fp8_storage="Enable"))
    assert applied.fp8 and stored.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert module_bytes([stored.unet]) < 0.3 * before  # fp32 → fp8 for the convolutions and linears
    rounded = _copy(builtin_model.unet)
    fp8_names = {n for n, p in stored.unet.named_parameters() if p.dtype == torch.float8_e4m3fn}
    with torch.no_grad():
        for name, param in rounded.named_parameters():
            if name in fp8_names:
                param.copy_(param.to(torch.float8_e4m3fn).float())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, 64, generator=generator)
    with torch.no_grad():
        expected = rounded(x, torch.tensor([400]), context).sample
        got = stored.unet(x, torch.tensor([400]), context).sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert speed.needs_reload(stored, speed.SpeedOptions(fp8_storage="Disable"))
    assert not speed.wants_fp8("Enable for SDXL", is_sdxl=False) and speed.wants_fp8("Enable for SDXL", True)


def _copy(unet):
    import copy

    return copy.deepcopy(unet)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(torch.uint8) if tensor.dtype == torch.float8_e4m3fn else tensor


def test_a_lora_on_fp8_weights_applies_and_restores_exactly(builtin_model, tmp_path):
    """FP8 tensors have no arithmetic: the LoRA is added in float32 and stored back in FP8."""
    from engine.models.lora import LoraFile, LoraRequest, applied
    from tests.models.test_lora import write_kohya_lora

    model = dataclasses.replace(builtin_model, unet=_copy(builtin_model.unet), speed=None)
    speed.apply(model, speed.SpeedOptions(fp8_storage="Enable"))
    saved = {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    lora = LoraFile.load(write_kohya_lora(tmp_path / "style.safetensors"))
    target = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    with applied(model, [(lora, LoraRequest("style", 0.0, 1.0))]):  # the UNet only
        assert target.weight.dtype == torch.float8_e4m3fn
        assert not torch.equal(
            _bits(target.weight),
            _bits(saved["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]),
        )
    for name, param in model.unet.named_parameters():
        assert torch.equal(_bits(param), _bits(saved[name])), name


def test_channels_last_changes_no_pixel(model):
    expected = draw(model)
    speed.apply(model, speed.SpeedOptions(channels_last=True))
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(draw(model) - expected).max() <= 1


def test_turning_fp8_off_reloads_the_checkpoint(tmp_path):
    from engine.service.facade import Engine

    engine = Engine(data_dir=tmp_path, device="cpu", load_extensions=False)
    job = GenerationParams(prompt="a red circle", steps=2, width=64, height=64, seed=1)
    engine.update_settings(fp8_storage="Enable")
    assert engine.submit_txt2img(job).wait(120)
    assert engine.models.current.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    engine.update_settings(fp8_storage="Disable")
    assert engine.submit_txt2img(job).wait(120)
    assert engine.models.current.unet.conv_in.weight.dtype == torch.float32


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    from engine.models.manager import resolve_dtypes

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="no bfloat16"):
        resolve_dtypes("bf16", torch.device("cuda"))


@pytest.mark.slow  # inductor compiles C++ kernels for the CPU: a minute or so on two cores
def test_a_compiled_unet_draws_the_same_picture_and_caches_its_kernels(model, tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    expected = draw(model)
    speed.apply(model, speed.SpeedOptions(compile_unet=True), tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torch_compile")
    assert np.abs(draw(model) - expected).max() <= 1
    assert any((tmp_path / "torch_compile").rglob("*"))  # kernels on disk for the next start
    speed.apply(model, speed.SpeedOptions(compile_unet=False))
    assert model.unet._compiled_call_impl is None and np.array_equal(draw(model), expected)
