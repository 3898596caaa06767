"""LoRA and LoCon in kohya's SDXL layout on the tiny SDXL models: `lora_te1_` is CLIP-L,
`lora_te2_` OpenCLIP-G, and the UNet named either as the original (SGM) UNet or as diffusers'.
Each key must land on its own module, and the model must come back bit for bit after the job;
the real SDXL UNet (built on the meta device) must get its own block numbering."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from engine.models.families import family
from engine.models.lora import LoraFile, LoraLibrary, LoraRequest, applied
from engine.models.lora import _targets as lora_targets
from engine.models.paths import configs_root
from engine.pipeline.txt2img import txt2img
from tests.fakes.tiny_models import load_tiny, tiny_params

# SGM name -> diffusers module, for the tiny SDXL UNet (one layer per block, no attention on
# level 0), so input_blocks 1 / 2 / 3 are level 0's resnet, its downsampler and level 1.
UNET = {
    "input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",  # 3×3: LoCon
    "input_blocks_2_0_op": "down_blocks.0.downsamplers.0.conv",
    "input_blocks_3_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",  # 1×1
    "input_blocks_3_1_transformer_blocks_1_attn2_to_k": (
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k"
    ),
    "middle_block_1_transformer_blocks_0_attn1_to_q": (
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
    ),
    "middle_block_2_emb_layers_1": "mid_block.resnets.1.time_emb_proj",
    "output_blocks_0_1_proj_out": "up_blocks.0.attentions.0.proj_out",
    "output_blocks_1_0_out_layers_3": "up_blocks.0.resnets.1.conv2",
    "output_blocks_1_2_conv": "up_blocks.0.upsamplers.0.conv",  # after the attention: slot 2
    "output_blocks_3_0_skip_connection": "up_blocks.1.resnets.1.conv_shortcut",
    "label_emb_0_0": "add_embedding.linear_1",
    "time_embed_2": "time_embedding.linear_2",
}
# kohya name -> (LoadedModel attribute, transformers path below `text_model`); layers 0 and 1,
# since SDXL takes the penultimate of the tiny encoders' 3 layers
TE = {
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (
        "text_encoder",
        "encoder.layers.0.self_attn.q_proj",
    ),
    "lora_te1_text_model_encoder_layers_1_mlp_fc1": ("text_encoder", "encoder.layers.1.mlp.fc1"),
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (
        "text_encoder_2",
        "encoder.layers.0.self_attn.q_proj",
    ),
    "lora_te2_text_model_encoder_layers_1_self_attn_out_proj": (
        "text_encoder_2",
        "encoder.layers.1.self_attn.out_proj",
    ),
}
STRAY = ["lora_unet_input_blocks_9_1_proj_in", "lora_te_text_model_encoder_layers_0_self_attn_q_proj"]
RANK, ALPHA = 4, 2.0


@pytest.fixture(scope="module")
def xl(sdxl_files):
    return load_tiny(sdxl_files["base"])


def _module(model, attribute: str, path: str) -> torch.nn.Module:
    root = getattr(model, attribute)
    return getattr(root, "text_model", root).get_submodule(path)  # transformers 5 drops text_model


def _targets(style: str) -> dict[str, tuple[str, str]]:
    """kohya key -> (attribute, module path) of the module it must patch."""
    unet = {
        ("lora_unet_" + (sgm if style == "sgm" else path.replace(".", "_"))): ("unet", path)
        for sgm, path in UNET.items()
    }
    return {**unet, **TE}


def write_xl_lora(path: Path, model, style: str = "sgm", seed: int = 0, scale: float = 0.3) -> Path:
    """A kohya LoRA with a factor pair for each target, shaped from the model's own layers: k×k
    convolutions get LoCon's k×k down and 1×1 up; plus STRAY keys no SDXL module has."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, (attribute, module_path) in _targets(style).items():
        weight = _module(model, attribute, module_path).weight
        out_dim, in_dim, *kernel = weight.shape
        spatial, up_spatial = tuple(kernel), (1, 1) if kernel else ()
        state[f"{key}.lora_down.weight"] = torch.randn(RANK, in_dim, *spatial, generator=g) * scale
        state[f"{key}.lora_up.weight"] = torch.randn(out_dim, RANK, *up_spatial, generator=g) * scale
        state[f"{key}.alpha"] = torch.tensor(ALPHA)
    for key in STRAY:
        state[f"{key}.lora_down.weight"] = torch.zeros(RANK, 8)
        state[f"{key}.lora_up.weight"] = torch.zeros(8, RANK)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def _state(model) -> dict[str, torch.Tensor]:
    parts = ("unet", "text_encoder", "text_encoder_2")
    return {
        f"{part}.{k}": v.clone()
        for part in parts
        if getattr(model, part) is not None
        for k, v in getattr(model, part).state_dict().items()
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _changed(before: dict[str, torch.Tensor], now: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], now[k])}


def _expected_delta(lora: LoraFile, key: str, shape: torch.Size) -> torch.Tensor:
    module = lora.modules[key]
    down = module.down.reshape(RANK, -1)  # in × kernel, unrolled
    product = module.up.reshape(-1, RANK) @ down
    return (product * ALPHA / RANK).reshape(shape)


def _state_name(model, attribute: str, path: str) -> str:
    """The name `_state` gives the weight of `path` in `attribute`."""
    inner = "text_model." if hasattr(getattr(model, attribute), "text_model") else ""
    return f"{attribute}.{inner}{path}.weight"


def test_each_key_lands_on_its_module_by_either_unet_naming(xl, tmp_path: Path) -> None:
    sgm = LoraFile.load(write_xl_lora(tmp_path / "sgm.safetensors", xl, "sgm"))
    diffusers = LoraFile.load(write_xl_lora(tmp_path / "diffusers.safetensors", xl, "diffusers"))
    before = _state(xl)
    request = LoraRequest("sgm", te=0.5, unet=0.7)
    notes: list[str] = []
    with applied(xl, [(sgm, request)], notes):
        merged = _state(xl)
    assert _same(_state(xl), before)  # every UNet and text-encoder weight restored exactly

    targets = _targets("sgm")
    assert _changed(before, merged) == {_state_name(xl, *t) for t in targets.values()}
    for key, (attribute, path) in targets.items():
        name = _state_name(xl, attribute, path)
        strength = request.unet if attribute == "unet" else request.te
        expected = before[name] + strength * _expected_delta(sgm, key, before[name].shape)
        assert torch.allclose(merged[name], expected, atol=1e-5), key
    assert notes == [f"LoRA sgm: 2 of {len(targets) + 2} weights did not match ({', '.join(sorted(STRAY))})"]

    with applied(xl, [(diffusers, request)]):  # diffusers' names: the same modules, the same sums
        assert _same(_state(xl), merged)
    assert _same(_state(xl), before)


def _image(result) -> np.ndarray:
    return np.asarray(result.images[0].convert("RGB")).astype(np.int16)


def test_an_sdxl_lora_changes_the_picture_and_strength_zero_does_not(xl, tmp_path: Path) -> None:
    write_xl_lora(tmp_path / "Lora" / "xl-style.safetensors", xl)
    library = LoraLibrary(tmp_path / "Lora")

    def run(prompt: str):
        return txt2img(xl, tiny_params(prompt=prompt), loras=library)

    before = _state(xl)
    plain = run("a red circle")
    with_lora = run("a red circle <lora:xl-style:1>")
    assert np.abs(_image(with_lora) - _image(plain)).mean() > 2
    assert any("2 of" in note and "did not match" in note for note in with_lora.notes)
    assert np.array_equal(_image(run("a red circle <lora:xl-style:0>")), _image(plain))
    assert _same(_state(xl), before)


def test_on_the_refiner_clip_l_weights_are_noted_not_applicable(xl, sdxl_files, tmp_path: Path) -> None:
    refiner = load_tiny(sdxl_files["refiner"])
    lora = LoraFile.load(write_xl_lora(tmp_path / "xl.safetensors", xl))  # shaped for the base
    before = _state(refiner)
    notes: list[str] = []
    with applied(refiner, [(lora, LoraRequest("xl"))], notes):
        changed = _changed(before, _state(refiner))
    assert _same(_state(refiner), before)

    te2 = {_state_name(refiner, *t) for t in TE.values() if t[0] == "text_encoder_2"}
    assert te2 <= changed and not any(name.startswith("text_encoder.") for name in changed)
    assert notes[0] == (
        "LoRA xl: 2 weights for a text encoder the SDXL refiner model does not have "
        "were not applied (lora_te1_*)"
    )
    # the refiner's narrower context and time ids: cross-attention k and add_embedding do not fit
    assert notes[1].startswith(f"LoRA xl: 4 of {len(UNET) + len(TE) + 2} weights did not match (")
    for key in ("input_blocks_3_1_transformer_blocks_1_attn2_to_k", "label_emb_0_0"):
        assert "unet." + UNET[key] + ".weight" not in changed


# kohya's SDXL trainer's names on the real SDXL UNet (two layers per block, attention on levels 1
# and 2 with 2 and 10 transformer blocks), numbered from the shipped config, not from the tiny one
REAL_SDXL = {
    "input_blocks_0_0": "conv_in",
    "input_blocks_4_1_transformer_blocks_0_attn1_to_q": (
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    ),
    "input_blocks_6_0_op": "down_blocks.1.downsamplers.0.conv",
    "input_blocks_7_0_in_layers_2": "down_blocks.2.resnets.0.conv1",
    "input_blocks_8_1_transformer_blocks_9_attn2_to_k": (
        "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k"
    ),
    "middle_block_1_transformer_blocks_9_ff_net_2": "mid_block.attentions.0.transformer_blocks.9.ff.net.2",
    "middle_block_2_emb_layers_1": "mid_block.resnets.1.time_emb_proj",
    "output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
    "output_blocks_5_1_transformer_blocks_1_attn2_to_k": (
        "up_blocks.1.attentions.2.transformer_blocks.1.attn2.to_k"
    ),
    "output_blocks_8_0_skip_connection": "up_blocks.2.resnets.2.conv_shortcut",
    "label_emb_0_2": "add_embedding.linear_2",
    "out_2": "conv_out",
}


def test_the_real_sdxl_unet_is_numbered_from_its_config() -> None:
    config = json.loads((configs_root() / "sdxl" / "unet" / "config.json").read_text())
    with torch.device("meta"):  # the real size without its memory
        unet = UNet2DConditionModel.from_config(config)
    model = SimpleNamespace(unet=unet, spec=family("sdxl"), text_encoder=None, text_encoder_2=None)
    table = lora_targets(model)
    for sgm, path in REAL_SDXL.items():
        assert table["lora_unet_" + sgm] is unet.get_submodule(path), sgm
        assert table["lora_unet_" + path.replace(".", "_")] is unet.get_submodule(path)
