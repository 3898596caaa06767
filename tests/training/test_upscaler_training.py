"""The built-in upscaler's training pieces: batches are (bicubic-downscaled, original) pairs, a few
steps lower the loss, the export loads through the app's upscaler library (spandrel), and a
fine-tune starts from an exported model's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.upscale.upscalers import UpscalerLibrary
from training.common import Deadline
from training.upscaler_stage import (
    UpscalerConfig,
    adapt_to_scale,
    batch,
    export_upscaler,
    make_model,
    natural_pictures,
    psnr_gain,
    synthetic_pictures,
    train_upscaler,
)

pytestmark = pytest.mark.slow  # training runs


def test_batches_pair_a_downscaled_patch_with_its_original():
    cfg = UpscalerConfig(batch=4, patch=16)
    low, high = batch(synthetic_pictures(4, 0, 64), [], cfg, np.random.default_rng(0))
    assert low.shape == (4, 3, 16, 16) and high.shape == (4, 3, 32, 32)
    assert low.dtype == high.dtype == torch.uint8
    low, high = low.float() / 255, high.float() / 255
    assert torch.allclose(torch.nn.functional.avg_pool2d(high, 2).mean(), low.mean(), atol=0.02)


def test_a_short_run_exports_a_model_the_app_loads(tmp_path):
    cfg = UpscalerConfig(
        steps=6, batch=2, patch=16, n_synthetic=4, num_feat=8, num_conv=2, eval_every=6, checkpoint_every=3
    )
    assert train_upscaler(tmp_path / "run", cfg, torch.device("cpu"), Deadline.in_minutes(None))
    path = export_upscaler(tmp_path / "run", 2, tmp_path / "upscalers")
    library = UpscalerLibrary(tmp_path / "models", extra_folders=(tmp_path / "upscalers",))
    assert "atelier-x2" in library.names()
    from PIL import Image

    out = library.upscale(Image.new("RGB", (40, 30), "red"), 2, "atelier-x2")
    assert out.size == (80, 60) and path.stat().st_size < 5 * 1024 * 1024
    from engine.upscale.ensemble import recommended_passes

    assert recommended_passes(path) == 1
    twice = export_upscaler(tmp_path / "run", 2, tmp_path / "asks-two", self_ensemble=2)
    assert recommended_passes(twice) == 2
    assert load_file(str(twice)).keys() == load_file(str(path)).keys()
    with pytest.raises(ValueError, match="self_ensemble"):
        export_upscaler(tmp_path / "run", 2, tmp_path / "bad", self_ensemble=3)


def test_psnr_gain_of_bicubic_itself_is_zero():
    from training.upscaler_stage import bicubic

    pictures = synthetic_pictures(2, 0, 64)
    assert abs(psnr_gain(lambda low: bicubic(low, (low.shape[1] * 2, low.shape[0] * 2)), pictures, 2)) < 1e-9


def test_a_fine_tune_starts_from_the_exported_weights(tmp_path):
    tiny = {"batch": 2, "patch": 16, "n_synthetic": 4, "num_feat": 8, "num_conv": 2, "eval_every": 99}
    assert train_upscaler(
        tmp_path / "a", UpscalerConfig(steps=3, **tiny), torch.device("cpu"), Deadline.in_minutes(None)
    )
    source = export_upscaler(tmp_path / "a", 2, tmp_path / "a_out")
    # lr 0: the fine-tune's optimizer moves nothing, so its export must equal what it started from.
    cfg = UpscalerConfig(steps=2, lr=0.0, loss="mse", **tiny)
    forever = Deadline.in_minutes(None)
    assert train_upscaler(tmp_path / "b", cfg, torch.device("cpu"), forever, init_from=source)
    tuned = load_file(str(export_upscaler(tmp_path / "b", 2, tmp_path / "b_out")))
    start = load_file(str(source))
    assert tuned.keys() == start.keys() and all(torch.equal(tuned[k], start[k]) for k in start)
    fresh = make_model(UpscalerConfig(**tiny)).state_dict()  # and that is not a fresh model
    assert not all(torch.equal(fresh[k].half(), start[k]) for k in start)


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss"):
        UpscalerConfig(loss="l3")


def test_the_stereo_pair_gives_two_colour_photos():
    left, right = natural_pictures(("stereo_motorcycle",))
    assert left.shape == right.shape and left.shape[2] == 3 and left.dtype == np.uint8
    assert not np.array_equal(left, right)


def test_a_x2_upscaler_starts_a_x4_one_as_its_own_output_enlarged_by_nearest():
    tiny = {"num_feat": 8, "num_conv": 2}
    torch.manual_seed(0)
    x2 = make_model(UpscalerConfig(scale=2, **tiny)).eval()
    x4 = make_model(UpscalerConfig(scale=4, **tiny)).eval()
    x4.load_state_dict(adapt_to_scale(x2.state_dict(), x4.state_dict(), 4))
    low = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(x2(low), scale_factor=2, mode="nearest")
        assert torch.allclose(x4(low), expected, atol=1e-5)


def test_init_weights_of_another_width_are_refused():
    wide = make_model(UpscalerConfig(scale=2, num_feat=8, num_conv=2)).state_dict()
    narrow = make_model(UpscalerConfig(scale=4, num_feat=4, num_conv=2)).state_dict()
    with pytest.raises(ValueError, match="init-from"):
        adapt_to_scale(wide, narrow, 4)


def test_soften_blurs_natural_crops_only():
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # every pixel its own: blur shows
    sharp = UpscalerConfig(batch=6, patch=16, natural_share=1.0)
    _, high = batch([], [noise], sharp, np.random.default_rng(0))
    soft = UpscalerConfig(batch=6, patch=16, natural_share=1.0, soften=2.0)
    _, blurred = batch([], [noise], soft, np.random.default_rng(0))

    def roughness(x: torch.Tensor) -> float:
        return (x[..., 1:].float() - x[..., :-1].float()).abs().mean().item()

    assert roughness(blurred) < 0.9 * roughness(high)
    _, synthetic_only = batch(synthetic_pictures(2, 0, 64), [], soft, np.random.default_rng(0))
    _, synthetic_sharp = batch(synthetic_pictures(2, 0, 64), [], sharp, np.random.default_rng(0))
    assert torch.equal(synthetic_only, synthetic_sharp)


def test_a_negative_soften_is_refused():
    with pytest.raises(ValueError, match="soften"):
        UpscalerConfig(soften=-1.0)


@pytest.mark.parametrize("deeper", [3, 4, 7])
def test_a_deeper_model_starts_as_exactly_the_shallower_one(deeper):
    torch.manual_seed(0)
    shallow = make_model(UpscalerConfig(scale=4, num_feat=8, num_conv=2)).eval()
    deep = make_model(UpscalerConfig(scale=4, num_feat=8, num_conv=deeper)).eval()
    deep.load_state_dict(adapt_to_scale(shallow.state_dict(), deep.state_dict(), 4))
    low = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(deep(low), shallow(low), atol=1e-6)
    # the shallower model's layers are all there, in order, and the added ones are the identity
    convs = [deep.state_dict()[f"body.{2 * k}.weight"] for k in range(1, deeper + 1)]
    old = [shallow.state_dict()[f"body.{2 * k}.weight"] for k in range(1, 3)]
    kept = [c for c in convs if any(torch.equal(c, o) for o in old)]
    assert len(kept) == 2 and torch.equal(kept[0], old[0]) and torch.equal(kept[1], old[1])
    assert sum(int(c[:, :, 1, 1].diagonal().eq(1).all() and c.abs().sum() == 8) for c in convs) == deeper - 2


def test_channel_shuffle_reorders_colours_of_natural_crops_only():
    rng = np.random.default_rng(1)
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 200 + rng.integers(0, 50, (64, 64))
    cfg = UpscalerConfig(batch=12, patch=16, natural_share=1.0, channel_shuffle=1.0)
    _, high = batch([], [red], cfg, np.random.default_rng(0))
    dominant = high.float().mean(dim=(2, 3)).argmax(dim=1)
    assert len(set(dominant.tolist())) > 1  # the red moved to other channels in some crops
    assert torch.equal(high.float().amax(dim=1), high.float().sum(dim=1))  # still one channel lit
    plain = UpscalerConfig(batch=12, patch=16, natural_share=0.0, channel_shuffle=1.0)
    scenes = synthetic_pictures(2, 0, 64)
    _, synthetic = batch(scenes, [red], plain, np.random.default_rng(0))
    unshuffled_cfg = UpscalerConfig(batch=12, patch=16, natural_share=0.0)
    _, unshuffled = batch(scenes, [red], unshuffled_cfg, np.random.default_rng(0))
    assert torch.equal(synthetic, unshuffled)
    with pytest.raises(ValueError, match="channel_shuffle"):
        UpscalerConfig(channel_shuffle=1.5)
