"""Family and prediction-type detection from weights, yaml sidecars and A1111's UNet probe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.models import loaders
from engine.models.detect import detect_traits, looks_like_v_prediction, prediction_from_yaml
from engine.models.loaders import load_checkpoint
from engine.models.registry import scan_checkpoints
from engine.models.types import LoadedModel
from tests.fakes.tiny_models import tiny_components, write_configs, write_single_file

UNET_KEYS = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
}


def test_sd1_sd2_and_inpainting_traits() -> None:
    clip_key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    sd1 = detect_traits({**UNET_KEYS, clip_key: (768,)})
    assert (sd1.family, sd1.context_dim, sd1.unet_in_channels, sd1.inpainting) == ("sd1", 768, 4, False)
    sd2_keys = {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
    }
    sd2 = detect_traits(sd2_keys)
    assert (sd2.family, sd2.context_dim, sd2.inpainting) == ("sd2", 1024, True)
    # tensors work as well as shapes
    assert detect_traits({k: torch.zeros(v) for k, v in sd2_keys.items()}).family == "sd2"


def test_unsupported_layouts_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="SDXL"):
        detect_traits({"conditioner.embedders.0.transformer.x": (1,), **UNET_KEYS})
    with pytest.raises(ValueError, match="not a Stable Diffusion"):
        detect_traits(UNET_KEYS, "lora.safetensors")
    with pytest.raises(ValueError, match="no UNet"):
        detect_traits({"cond_stage_model.model.token_embedding.weight": (2, 2)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('model:\n  params:\n    parameterization: "v"\n', "v_prediction"),
        ("model:\n  params:\n    parameterization: v  # 768-v\n", "v_prediction"),
        ("model:\n  params:\n    parameterization: 'eps'\n", "epsilon"),
        ("model:\n  params:\n    linear_start: 0.00085\n", None),
    ],
)
def test_yaml_sidecar(tmp_path: Path, text: str, expected: str | None) -> None:
    weights = tmp_path / "m.safetensors"
    assert prediction_from_yaml(weights) is None
    (tmp_path / "m.yaml").write_text(text)
    assert prediction_from_yaml(weights) == expected


class _StubUNet(torch.nn.Module):
    """Returns x + offset: A1111's rule reads mean(out − x) < −1 as v-prediction."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(in_channels=4, cross_attention_dim=1024)
        self.seen: dict[str, object] = {}

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> object:
        self.seen = {"x": x, "t": t, "cond": encoder_hidden_states}
        return SimpleNamespace(sample=x + self.offset)


def test_v_prediction_probe_on_stubs() -> None:
    v_like, eps_like = _StubUNet(-1.5), _StubUNet(0.2)
    assert looks_like_v_prediction(v_like) is True
    assert looks_like_v_prediction(eps_like) is False
    seen = eps_like.seen
    assert seen["x"].shape == (1, 4, 8, 8) and torch.all(seen["x"] == 0.5)  # type: ignore[union-attr]
    assert seen["cond"].shape == (1, 2, 1024) and torch.all(seen["cond"] == 0.5)  # type: ignore[union-attr]
    assert seen["t"].tolist() == [999]  # type: ignore[union-attr]


def _load(path: Path) -> LoadedModel:
    (info,) = [i for i in scan_checkpoints([path.parent]) if i.path == path]
    return load_checkpoint(info, torch.device("cpu"), torch.float32, torch.float32)


def test_sd2_single_file_with_yaml_is_v_prediction(tmp_path: Path) -> None:
    parts = tiny_components(seed=3, family="sd2")
    path = write_single_file(parts, tmp_path / "sd2.safetensors")
    model = _load(path)
    assert (model.family, model.prediction_type) == ("sd2", "epsilon")  # the sidecar's scheduler says so
    assert model.tokenizer.pad_token == "!"
    (tmp_path / "sd2.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert _load(path).prediction_type == "v_prediction"  # the yaml wins


def test_sd2_without_yaml_uses_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sidecar, no yaml: the shipped SD2 config is used and the UNet probe decides ε vs v.
    The shipped configs are SD2-sized, so a tiny stand-in config folder replaces them here."""
    parts = tiny_components(seed=4, family="sd2")
    path = write_single_file(parts, tmp_path / "bare.safetensors", sidecar=None)
    stand_in = write_configs(parts, tmp_path / "configs" / "sd2")
    asked: list[tuple[str, str]] = []

    def fake_shipped(family: str, prediction_type: str = "epsilon") -> Path:
        asked.append((family, prediction_type))
        return stand_in

    monkeypatch.setattr(loaders.configs, "shipped_config_dir", fake_shipped)
    probed: list[torch.dtype] = []
    monkeypatch.setattr(
        loaders, "looks_like_v_prediction", lambda unet: probed.append(next(unet.parameters()).dtype) or True
    )
    model = _load(path)
    assert model.prediction_type == "v_prediction" and model.family == "sd2"
    assert probed == [torch.float32]
    assert asked == [("sd2", "epsilon"), ("sd2", "v_prediction")]

    monkeypatch.setattr(loaders, "looks_like_v_prediction", lambda unet: False)
    assert _load(path).prediction_type == "epsilon"


def test_sd1_file_without_sidecar_uses_shipped_sd1_config(tmp_path: Path) -> None:
    """A tiny SD1 file without sidecar must be judged against the real SD1 architecture: the
    shapes do not match, and the error says which config was used."""
    parts = tiny_components(seed=6)
    path = write_single_file(parts, tmp_path / "odd.safetensors", sidecar=None)
    with pytest.raises(ValueError, match=r"odd.safetensors does not match the SD 1.x arch.*configs/sd1"):
        _load(path)
