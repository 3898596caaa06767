"""The built-in canny ControlNet's training pieces on tiny components: it starts as the UNet's
encoder with no effect, handles the coordinate UNet, learns (loss falls on a fixed batch), and its
export loads back through the app's ControlNet loader with the same weights, and a fine-tune starts
from another run's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.controlnet.models import ControlNetLibrary
from tests.fakes.tiny_models import tiny_components
from training.common import Deadline
from training.controlnet_stage import STATE_FILE, ControlNetConfig, make_controlnet, train_controlnet
from training.export import export_controlnet
from world.edges import edge_iou, edges_of


def test_a_new_controlnet_copies_the_encoder_and_does_nothing_yet():
    parts = tiny_components(seed=0)
    cn = make_controlnet(parts.unet)
    assert torch.equal(cn.conv_in.weight, parts.unet.conv_in.weight)
    assert torch.equal(
        cn.down_blocks[0].resnets[0].conv1.weight, parts.unet.down_blocks[0].resnets[0].conv1.weight
    )
    assert all(b.weight.abs().max() == 0 for b in cn.controlnet_down_blocks)  # zero convolutions


def test_the_coordinate_unet_gives_its_latent_channels():
    parts = tiny_components(seed=0, coords=True)
    cn = make_controlnet(parts.unet)
    assert cn.conv_in.weight.shape[1] == 4
    assert torch.equal(cn.conv_in.weight, parts.unet.conv_in.weight[:, :4])


def test_export_loads_back_through_the_app(tmp_path):
    parts = tiny_components(seed=0)
    cn = make_controlnet(parts.unet)
    with torch.no_grad():
        for block in cn.controlnet_down_blocks:
            block.weight.normal_()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"ema": cn.state_dict(), "step": 1}, run_dir / STATE_FILE)
    path = export_controlnet(run_dir, parts.unet, tmp_path / "ControlNet")
    loaded, title = ControlNetLibrary(tmp_path / "ControlNet").load(
        path.stem, parts.unet, torch.device("cpu"), torch.float32
    )
    assert title.startswith("atelier-tiny-canny [")
    for key, value in cn.state_dict().items():
        assert torch.allclose(loaded.state_dict()[key], value.half().float()), key


def test_edge_iou():
    a = np.zeros((32, 32), bool)
    a[10, 5:25] = True
    shifted = np.roll(a, 1, axis=0)
    assert edge_iou(a, a) == 1.0 and edge_iou(a, shifted) > 0.6
    assert edge_iou(a, np.roll(a, 12, axis=0)) == 0.0
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[8:24, 8:24] = 255
    assert edges_of(picture)[6:10, 12].any() and not edges_of(picture)[12:20, 12:20].any()


@pytest.mark.slow
def test_a_fine_tune_starts_from_another_runs_weights(tmp_path, tiny_single_file):
    from engine.models.loaders import load_checkpoint
    from engine.models.registry import scan_checkpoints

    (info,) = [i for i in scan_checkpoints([tiny_single_file.parent]) if i.path == tiny_single_file]
    model = load_checkpoint(info, torch.device("cpu"), torch.float32, torch.float32)
    source = make_controlnet(model.unet)
    with torch.no_grad():
        for block in source.controlnet_down_blocks:
            block.weight.normal_()
    (tmp_path / "src").mkdir()
    torch.save({"ema": source.state_dict(), "step": 3}, tmp_path / "src" / STATE_FILE)
    # lr 0: nothing moves, so the new run's weights must be the source's, not a fresh copy's zeros.
    cfg = ControlNetConfig(n_scenes=4, steps=1, batch=2, lr=0.0, eval_every=99, checkpoint_every=1)
    forever = Deadline.in_minutes(None)
    assert train_controlnet(model, tmp_path / "ft", cfg, forever, init_from=tmp_path / "src")
    state = torch.load(tmp_path / "ft" / STATE_FILE, weights_only=False)
    for weights in (state["controlnet"], state["ema"]):
        for key, value in source.state_dict().items():
            assert torch.equal(weights[key], value), key
