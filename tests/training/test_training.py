"""The training code on tiny modules: it learns, it resumes exactly, and its export loads like a
user's checkpoint. (The real run takes hours; see tools/train_default_model.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.manager import ModelManager
from tests.fakes.tiny_models import tiny_components
from training.common import Deadline, load_state
from training.diffusion_stage import DiffusionConfig, alphas_cumprod, train_diffusion
from training.export import export_builtin, trained_modules
from training.vae_stage import VaeConfig, train_vae

pytestmark = pytest.mark.slow  # training runs

VAE_CFG = VaeConfig(
    steps=6, full_frame_from=4, crop_batch=2, full_batch=1, eval_every=6, eval_scenes=2, checkpoint_every=3
)
DIFF_CFG = DiffusionConfig(
    n_scenes=16,
    steps=4,
    batch=4,
    eval_every=4,
    eval_prompts=1,
    checkpoint_every=2,
    offset_noise_from=2,
    pyramid_discount=0.8,
    high_t_fraction=0.5,
    mask_loss=0.5,
    input_perturbation=0.1,  # every optional term on, so resuming is checked with each of them
)
CPU = torch.device("cpu")
NEVER = Deadline(None)


class StopAfter:
    """A deadline that passes after `n` checks: simulates a run killed part-way."""

    def __init__(self, n: int) -> None:
        self.left = n

    def passed(self) -> bool:
        self.left -= 1
        return self.left < 0


def build():
    parts = tiny_components(seed=3, coords=True)  # the built-in model's UNet class
    return parts.unet, parts.vae, parts.text_encoder


def run_all(run_dir: Path, vae_deadline=NEVER, diffusion_deadline=NEVER) -> tuple[bool, bool]:
    unet, vae, te = build()
    vae_done = train_vae(vae, run_dir, VAE_CFG, CPU, vae_deadline)
    if not vae_done:
        return False, False
    return True, train_diffusion(unet, vae, te, run_dir, DIFF_CFG, CPU, diffusion_deadline)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_state(a[key], b[key])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    assert run_all(run_dir) == (True, True)
    return run_dir


def test_training_writes_logs_grids_and_checkpoints(straight_run: Path) -> None:
    for name in ("vae_state.pt", "diffusion_state.pt", "latents.pt", "vae_log.jsonl", "diffusion_log.jsonl"):
        assert (straight_run / name).is_file(), name
    assert (straight_run / "samples" / "vae_000006.png").is_file()
    assert (straight_run / "samples" / "diffusion_000004.png").is_file()
    state = load_state(straight_run / "diffusion_state.pt")
    assert state["step"] == 4 and np.isfinite(state["scale"]) and state["scale"] > 0
    # the EMA moved away from the starting weights (it is what gets shipped)
    fresh_unet = build()[0].state_dict()
    assert any(not torch.equal(state["ema_unet"][k], fresh_unet[k]) for k in fresh_unet)


def test_interrupted_run_resumes_to_identical_weights(straight_run: Path, tmp_path: Path) -> None:
    assert run_all(tmp_path, vae_deadline=StopAfter(2)) == (False, False)  # killed mid-VAE
    assert load_state(tmp_path / "vae_state.pt")["step"] == 2
    assert run_all(tmp_path, diffusion_deadline=StopAfter(3)) == (True, False)  # killed mid-diffusion
    assert load_state(tmp_path / "diffusion_state.pt")["step"] == 3
    assert run_all(tmp_path) == (True, True)
    for name in ("vae_state.pt", "diffusion_state.pt"):
        a, b = load_state(straight_run / name), load_state(tmp_path / name)
        assert_same_state(
            a["ema"] if "ema" in a else a["ema_unet"], b["ema"] if "ema" in b else b["ema_unet"]
        )
        assert_same_state(a["optimizer"]["state"], b["optimizer"]["state"])


def test_resume_with_other_settings_is_refused(straight_run: Path, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    shutil.copy(straight_run / "vae_state.pt", tmp_path / "vae_state.pt")
    unet, vae, _ = build()
    with pytest.raises(SystemExit, match="other settings"):
        train_vae(vae, tmp_path, dataclasses.replace(VAE_CFG, lr=1e-2), CPU, NEVER)


def test_diffusion_loss_schedule_is_sd(straight_run: Path) -> None:
    ab = alphas_cumprod()
    betas = 1 - ab / torch.cat([torch.ones(1), ab[:-1]])
    assert betas[0].item() == pytest.approx(0.00085, rel=1e-4) and betas[-1].item() == pytest.approx(
        0.012, rel=1e-4
    )


def test_export_loads_through_the_registry_like_a_user_checkpoint(straight_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "Stable-diffusion"
    weights = export_builtin(straight_run, folder, build=build)
    assert (
        weights.suffix == ".safetensors"
        and (folder / f"{weights.stem}.config" / "model_index.json").is_file()
    )
    manager = ModelManager(root=tmp_path, device="cpu", cache_dir=tmp_path / "cache")
    model = manager.get(weights.stem)
    unet, vae, _ = trained_modules(straight_run, build)
    assert model.vae.config.scaling_factor == pytest.approx(vae.config.scaling_factor)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.unet(x, torch.tensor([500]), encoder_hidden_states=ctx).sample
        trained = unet(x, torch.tensor([500]), encoder_hidden_states=ctx).sample
    assert torch.allclose(ours, trained, atol=0.02)  # fp16 storage only


def test_init_from_starts_a_fine_tune_at_another_runs_weights(straight_run: Path, tmp_path: Path) -> None:
    from training.diffusion_stage import init_from_run

    source = load_state(straight_run / "diffusion_state.pt")
    plain = tiny_components(seed=3).unet  # a run made before the UNet saw coordinates
    plain_state = {**source, "ema_unet": {**source["ema_unet"]}}
    plain_state["ema_unet"]["conv_in.weight"] = source["ema_unet"]["conv_in.weight"][:, :4].clone()
    assert plain.conv_in.weight.shape == plain_state["ema_unet"]["conv_in.weight"].shape
    (tmp_path / "old").mkdir()
    torch.save(plain_state, tmp_path / "old" / "diffusion_state.pt")
    unet, _, te = build()
    init_from_run(unet, te, tmp_path / "old")
    assert torch.equal(unet.conv_in.weight[:, :4], plain_state["ema_unet"]["conv_in.weight"])
    assert not unet.conv_in.weight[:, 4:].any()  # coordinate columns start at zero
    assert_same_state(te.state_dict(), source["ema_text_encoder"])
    with pytest.raises(FileNotFoundError, match="no diffusion_state.pt"):
        init_from_run(unet, te, tmp_path / "nowhere")


def test_the_mask_head_trains_with_the_run_but_never_ships(straight_run: Path) -> None:
    from training.diffusion_stage import scene_masks

    state = load_state(straight_run / "diffusion_state.pt")
    assert set(state["mask_head"]) == {"conv.weight", "conv.bias"}
    assert not any(k.startswith("mask") for k in state["ema_unet"])
    unet, _, _ = trained_modules(straight_run, build)
    assert not unet.conv_out._forward_pre_hooks  # the exported UNet is the plain architecture
    masks = scene_masks(DIFF_CFG, 8)
    assert masks.shape == (16, 1, 8, 8) and masks.min() == -1 and masks.max() == 1


def test_a_focus_draws_more_of_one_background() -> None:
    from training.diffusion_stage import draw_indices, focus_indices

    captions = [
        "a large red circle at the top left on an orange background",
        "a small blue star in the center on a red background",
        "a small white square on the left on a green background",
        "a large black star at the bottom on an orange background",
    ]
    focus = focus_indices(captions, "orange")
    assert focus.tolist() == [0, 3] and focus_indices(captions, "") is None
    with pytest.raises(ValueError, match="purple"):
        focus_indices(captions, "purple")
    plain = draw_indices(np.random.default_rng(0), 4, 4000, None, 0.5)
    assert plain.tolist() == np.random.default_rng(0).integers(4, size=4000).tolist()
    focused = draw_indices(np.random.default_rng(0), 4, 4000, focus, 0.5)
    share = np.isin(focused, focus).mean()  # 0.5 forced + half of the other 0.5 by chance
    assert 0.72 < share < 0.78 and np.isin(plain, focus).mean() < 0.55


def test_prep_finetune_puts_the_shipped_weights_where_init_from_reads_them(tmp_path: Path) -> None:
    from engine.models.builtin import BUILTIN_NAME, build_builtin_modules
    from engine.models.paths import APP_ROOT
    from tools.prep_finetune import main
    from training.diffusion_stage import init_from_run

    assert main(["--run-dir", str(tmp_path / "run"), "--source-dir", str(tmp_path / "src")]) == 0
    shipped = ModelManager(root=APP_ROOT, device="cpu", precision="fp32").get(BUILTIN_NAME)
    unet, vae, te = build_builtin_modules()
    init_from_run(unet, te, tmp_path / "src")
    assert_same_state(unet.state_dict(), shipped.unet.state_dict())
    assert_same_state(te.state_dict(), shipped.text_encoder.state_dict())
    assert_same_state(load_state(tmp_path / "run" / "vae_state.pt")["ema"], shipped.vae.state_dict())


def test_stop_at_ends_part_way_and_resumes_to_the_straight_run(straight_run: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(straight_run / "vae_state.pt", tmp_path / "vae_state.pt")
    unet, vae, te = build()
    assert not train_diffusion(unet, vae, te, tmp_path, DIFF_CFG, CPU, NEVER, stop_at=3)
    assert load_state(tmp_path / "diffusion_state.pt")["step"] == 3
    unet, vae, te = build()  # a second call at the same stop changes nothing
    assert not train_diffusion(unet, vae, te, tmp_path, DIFF_CFG, CPU, NEVER, stop_at=3)
    assert load_state(tmp_path / "diffusion_state.pt")["step"] == 3
    unet, vae, te = build()
    assert train_diffusion(unet, vae, te, tmp_path, DIFF_CFG, CPU, NEVER)
    a, b = load_state(straight_run / "diffusion_state.pt"), load_state(tmp_path / "diffusion_state.pt")
    assert_same_state(a["ema_unet"], b["ema_unet"])
