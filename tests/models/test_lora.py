"""LoRA in kohya's key layout: tags in the prompt, merged per job at their strengths, the model
restored bit for bit afterwards, hashes in the infotext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.models.lora import LoraFile, LoraLibrary, LoraRequest, applied, extract_lora_tags
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams

UNET_KEYS = {  # kohya prefix -> (in, out) of the built-in model's layer
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (64, 64),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v": (64, 64),
    "lora_unet_up_blocks_2_attentions_0_transformer_blocks_0_ff_net_2": (256, 64),
}
TE_KEYS = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj": (64, 64)}


def write_kohya_lora(
    path: Path, seed: int = 0, rank: int = 4, alpha: float = 2.0, scale: float = 0.5
) -> Path:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, (fan_in, fan_out) in {**UNET_KEYS, **TE_KEYS}.items():
        state[f"{prefix}.lora_down.weight"] = torch.randn(rank, fan_in, generator=g) * scale
        state[f"{prefix}.lora_up.weight"] = torch.randn(fan_out, rank, generator=g) * scale
        state[f"{prefix}.alpha"] = torch.tensor(alpha)
    # a LoCon conv: 3×3 down, 1×1 up
    state["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"] = (
        torch.randn(rank, 64, 3, 3, generator=g) * 0.05
    )
    state["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"] = (
        torch.randn(64, rank, 1, 1, generator=g) * 0.05
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def test_tags_are_taken_out_of_the_prompt() -> None:
    prompt, requests = extract_lora_tags(
        "a cat <lora:style:0.8>, on grass <lora:other:1:0.5> <lora:x:te=0.2:unet=0.7>"
    )
    assert prompt == "a cat , on grass  "
    assert requests == [
        LoraRequest("style", 0.8, 0.8),
        LoraRequest("other", 1.0, 0.5),
        LoraRequest("x", 0.2, 0.7),
    ]
    assert extract_lora_tags("<lora:plain>") == ("", [LoraRequest("plain", 1.0, 1.0)])
    with pytest.raises(ValueError, match="multipliers must be numbers"):
        extract_lora_tags("<lora:style:strong>")


def _state(model) -> dict[str, torch.Tensor]:
    return {
        **{f"unet.{k}": v.clone() for k, v in model.unet.state_dict().items()},
        **{f"te.{k}": v.clone() for k, v in model.text_encoder.state_dict().items()},
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_merge_is_alpha_over_rank_times_up_down_and_is_undone(builtin_model, tmp_path: Path) -> None:
    lora = LoraFile.load(write_kohya_lora(tmp_path / "Lora" / "style.safetensors"))
    before = _state(builtin_model)
    target = builtin_model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    module = lora.modules["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"]
    expected = target.weight + 0.7 * (2.0 / 4) * (module.up @ module.down)
    with applied(builtin_model, [(lora, LoraRequest("style", te=1.0, unet=0.7))]):
        assert torch.allclose(target.weight, expected, atol=1e-6)
        assert not _same(_state(builtin_model), before)
    assert _same(_state(builtin_model), before)
    with pytest.raises(RuntimeError, match="boom"), applied(builtin_model, [(lora, LoraRequest("style"))]):
        raise RuntimeError("boom")  # an error (or an interrupt) mid-job restores too
    assert _same(_state(builtin_model), before)


def _image(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB")).astype(np.int16)


def test_a_lora_changes_the_picture_and_strength_zero_does_not(builtin_model, tmp_path: Path) -> None:
    write_kohya_lora(tmp_path / "Lora" / "style.safetensors")
    library = LoraLibrary(tmp_path / "Lora")
    prompt = "a large red circle in the center on a blue background"

    def run(text: str):
        params = GenerationParams(prompt=text, steps=8, seed=3, width=128, height=128)
        return txt2img(builtin_model, params, loras=library)

    before = _state(builtin_model)
    plain = run(prompt)
    with_lora = run(f"{prompt} <lora:style:1>")
    assert np.abs(_image(with_lora) - _image(plain)).mean() > 2
    assert np.array_equal(_image(run(f"{prompt} <lora:style:0>")), _image(plain))
    assert _same(_state(builtin_model), before)  # every UNet and text-encoder weight as it was
    assert np.array_equal(_image(run(prompt)), _image(plain))

    infotext = with_lora.infotexts[0]
    assert infotext.startswith(f"{prompt} <lora:style:1>")  # the prompt as written
    assert f'Lora hashes: "style: {library.get("style").short_hash}"' in infotext

    missing = run(f"{prompt} <lora:nowhere:1>")
    assert "LoRA not found: nowhere" in missing.notes
    assert np.array_equal(_image(missing), _image(plain))


def test_a_lora_for_another_model_is_a_clear_error(builtin_model, tmp_path: Path) -> None:
    path = tmp_path / "Lora" / "sd15.safetensors"
    path.parent.mkdir(parents=True)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file(
        {f"{key}.lora_down.weight": torch.zeros(4, 768), f"{key}.lora_up.weight": torch.zeros(320, 4)},
        str(path),
    )
    before = _state(builtin_model)
    params = GenerationParams(prompt="a cat <lora:sd15:1>", steps=2, width=128, height=128)
    with pytest.raises(ValueError, match="LoRA 'sd15' does not fit this model"):
        txt2img(builtin_model, params, loras=LoraLibrary(path.parent))
    assert _same(_state(builtin_model), before)
    (path.parent / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError):
        LoraFile.load(path.parent / "empty.safetensors")
