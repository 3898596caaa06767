"""Batches made ahead in worker processes are exactly the batches made in the training process."""

import numpy as np
import torch

from training.common import Deadline, load_state, step_batches, step_rng


def _noise(step: int) -> torch.Tensor:
    return torch.from_numpy(step_rng(1, "test", step).standard_normal(5))


def test_workers_yield_the_same_batches_in_step_order():
    inline = list(step_batches(_noise, 3, 11))
    ahead = list(step_batches(_noise, 3, 11, workers=2))
    assert len(inline) == len(ahead) == 8
    for a, b in zip(inline, ahead, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(inline[0], inline[1])


def test_an_upscaler_trained_with_workers_has_the_same_weights(tmp_path):
    from training.upscaler_stage import UpscalerConfig, train_upscaler

    cfg = UpscalerConfig(steps=4, batch=2, patch=16, n_synthetic=4, num_feat=8, num_conv=2, eval_every=100)
    for workers in (0, 2):
        assert train_upscaler(
            tmp_path / f"w{workers}", cfg, torch.device("cpu"), Deadline.in_minutes(None), workers
        )
    a = load_state(tmp_path / "w0" / "upscaler_x2_state.pt")["model"]
    b = load_state(tmp_path / "w2" / "upscaler_x2_state.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_controlnet_batch_is_a_function_of_its_step():
    from training.controlnet_stage import ControlNetConfig, control_batch
    from world import random_scene

    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(6)]
    cfg = ControlNetConfig(batch=4)
    first = control_batch(scenes, 128, cfg, (4, 16, 16), 5)
    again = control_batch(scenes, 128, cfg, (4, 16, 16), 5)
    other = control_batch(scenes, 128, cfg, (4, 16, 16), 6)
    index, hint, t, drop, noise = first
    assert index.shape == (4,) and hint.shape == (4, 3, 128, 128) and noise.shape == (4, 4, 16, 16)
    assert 0 <= float(hint.min()) and float(hint.max()) <= 1 and hint.max() > 0  # canny edges drawn
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(noise, other[4])
