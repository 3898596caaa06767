"""The built-in model's coordinate-aware UNet: a plain UNet2DConditionModel in every respect but
conv_in, loaded through the same single-file and diffusers-folder paths as any checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.models.coord_unet import (
    CoordUNet2DConditionModel,
    coordinate_planes,
    grow_conv_in,
    unet_class_for_config,
)
from engine.models.loaders import load_checkpoint
from engine.models.registry import scan_checkpoints
from tests.fakes.tiny_models import tiny_components, write_diffusers_folder, write_single_file

CPU = torch.device("cpu")


def _unet_out(unet, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    ctx = torch.randn(x.shape[0], 77, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return unet(x, torch.tensor([500] * x.shape[0]), encoder_hidden_states=ctx).sample


def _latents(h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(0))


def test_coordinate_planes_run_left_to_right_and_top_to_bottom() -> None:
    planes = coordinate_planes(torch.zeros(2, 4, 3, 5))
    assert planes.shape == (2, 2, 3, 5)
    xs, ys = planes[0]
    assert xs[0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and torch.equal(xs[0], xs[2])
    assert ys[:, 0].tolist() == [-1.0, 0.0, 1.0] and torch.equal(ys[:, 0], ys[:, 4])


def test_only_conv_in_differs_from_the_plain_unet() -> None:
    coord = tiny_components(seed=4, coords=True).unet
    plain = tiny_components(seed=4).unet
    assert isinstance(coord, type(plain)) and dict(coord.config) == dict(plain.config)
    assert coord.conv_in.weight.shape == (16, 6, 3, 3) and plain.conv_in.weight.shape == (16, 4, 3, 3)
    assert {k for k in coord.state_dict()} == {k for k in plain.state_dict()}
    for h, w in ((8, 8), (16, 24)):  # any latent size: the planes follow the frame
        assert _unet_out(coord, _latents(h, w)).shape == (1, 4, h, w)


def test_grown_plain_weights_compute_exactly_what_they_did() -> None:
    plain = tiny_components(seed=5).unet
    coord = tiny_components(seed=6, coords=True).unet
    coord.load_state_dict(grow_conv_in(plain.state_dict(), coord))
    assert torch.equal(_unet_out(coord, _latents()), _unet_out(plain, _latents()))
    # ...and once the coordinate columns are non-zero, where a pixel is changes what comes out
    with torch.no_grad():
        coord.conv_in.weight[:, 4:] = 0.5
    assert not torch.allclose(_unet_out(coord, _latents()), _unet_out(plain, _latents()))


@pytest.mark.parametrize("form", ["single_file", "diffusers_folder"])
def test_loaders_build_the_class_the_config_names(form: str, tmp_path: Path) -> None:
    parts = tiny_components(seed=7, coords=True)
    with torch.no_grad():
        parts.unet.conv_in.weight[:, 4:] = 0.3  # coordinate weights that matter
    if form == "single_file":
        target = write_single_file(parts, tmp_path / "coord.safetensors")
        config = tmp_path / "coord.config" / "unet" / "config.json"
    else:
        target = write_diffusers_folder(parts, tmp_path / "coord")
        config = target / "unet" / "config.json"
    assert json.loads(config.read_text())["_class_name"] == "CoordUNet2DConditionModel"
    (info,) = [i for i in scan_checkpoints([tmp_path]) if i.path == target]
    model = load_checkpoint(info, CPU, torch.float32, torch.float32)
    assert type(model.unet) is CoordUNet2DConditionModel and not model.is_inpainting
    assert torch.equal(model.unet.conv_in.weight, parts.unet.conv_in.weight)
    # (single files store 1×1 projections as convs: bit-equal weights, float-rounding outputs)
    assert torch.allclose(_unet_out(model.unet, _latents()), _unet_out(parts.unet, _latents()), atol=1e-5)


def test_an_unknown_unet_class_is_a_clear_error() -> None:
    assert unet_class_for_config({}).__name__ == "UNet2DConditionModel"
    with pytest.raises(ValueError, match="unsupported UNet class 'UNetMystery'"):
        unet_class_for_config({"_class_name": "UNetMystery"})


def test_the_builtin_architecture_is_coordinate_aware() -> None:
    from engine.models.builtin import build_builtin_modules

    unet = build_builtin_modules()[0]
    assert isinstance(unet, CoordUNet2DConditionModel) and unet.conv_in.weight.shape[1] == 6
