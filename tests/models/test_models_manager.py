"""ModelManager: precision/device resolution, one model at a time, memory, VAE choice, builtin."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.models.builtin import builtin_model_path, builtin_paths
from engine.models.ldm_convert import vae_to_ldm
from engine.models.manager import ModelManager, resolve_device, resolve_dtypes
from tests.fakes.memory import rss_growth_over_switches
from tests.fakes.tiny_models import TinyComponents, tiny_components, write_single_file

CPU = torch.device("cpu")


def test_precision_resolution() -> None:
    assert resolve_dtypes("auto", CPU) == (torch.float32, torch.float32)
    assert resolve_dtypes("auto", torch.device("cuda")) == (torch.float16, torch.float16)
    assert resolve_dtypes("auto", torch.device("mps")) == (torch.float16, torch.float16)
    assert resolve_dtypes("auto", torch.device("cuda"), no_half_vae=True) == (torch.float16, torch.float32)
    assert resolve_dtypes("bf16", CPU) == (torch.bfloat16, torch.bfloat16)
    assert resolve_dtypes("fp16", CPU, no_half_vae=True) == (torch.float16, torch.float32)
    assert resolve_dtypes("fp32", torch.device("cuda")) == (torch.float32, torch.float32)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_dtypes("int8", CPU)


def test_device_resolution() -> None:
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        has_mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        expected = "mps" if has_mps else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_empty_models_folder(app_root: Path) -> None:
    manager = ModelManager(root=app_root, device="cpu")
    assert manager.list_checkpoints() == []
    assert manager.current is None
    with pytest.raises(ValueError, match="no checkpoints found"):
        manager.get()
    with pytest.raises(ValueError, match="no checkpoints found"):
        manager.get("anything")


@pytest.fixture
def two_models(app_root: Path, tiny_parts: TinyComponents, tiny_parts_b: TinyComponents) -> Path:
    sd = app_root / "models" / "Stable-diffusion"
    write_single_file(tiny_parts, sd / "first.safetensors")
    write_single_file(tiny_parts_b, sd / "second.safetensors")
    return app_root


def test_find_by_title_file_name_and_a1111_title(two_models: Path) -> None:
    manager = ModelManager(root=two_models, device="cpu", cache_dir=two_models / "cache")
    assert [i.title for i in manager.list_checkpoints()] == ["first", "second"]
    assert manager.find("second.safetensors").name == "second"
    model = manager.get("first")
    assert manager.find(f"first [{model.short_hash}]").name == "first"
    assert manager.find(model.short_hash).name == "first"  # hash already known from loading
    with pytest.raises(ValueError, match="'nope' not found. Available: first, second"):
        manager.find("nope")


@pytest.mark.slow
def test_switching_keeps_one_model_and_does_not_grow_rss(
    two_models: Path, tiny_parts: TinyComponents, tiny_parts_b: TinyComponents
) -> None:
    manager = ModelManager(root=two_models, device="cpu", cache_dir=two_models / "cache")
    a = manager.get("first")
    assert manager.get("first") is a  # no reload for the loaded model
    assert torch.equal(a.unet.conv_in.weight, tiny_parts.unet.conv_in.weight)
    b = manager.get("second")
    assert manager.current is b and b is not a
    assert torch.equal(b.unet.conv_in.weight, tiny_parts_b.unet.conv_in.weight)
    del a, b

    grown = rss_growth_over_switches(manager, "first", "second")
    # one leaked tiny model is ~7 MB; 20 leaked loads would be ~140 MB
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 20 switches"


def test_concurrent_gets_are_serialised(two_models: Path) -> None:
    manager = ModelManager(root=two_models, device="cpu", cache_dir=two_models / "cache")
    errors: list[BaseException] = []

    def worker(title: str) -> None:
        try:
            for _ in range(3):
                model = manager.get(title)
                assert model.info.name == title  # never half-switched under our feet
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert manager.current is not None


def _write_vae(path: Path, seed: int) -> torch.nn.Module:
    from safetensors.torch import save_file

    vae = tiny_components(seed=seed).vae
    state = vae_to_ldm(vae.state_dict(), vae.config, prefix="first_stage_model.")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return vae


def test_vae_choices(two_models: Path, tiny_parts: TinyComponents) -> None:
    external = _write_vae(two_models / "models" / "VAE" / "nice-vae.safetensors", seed=7)
    manager = ModelManager(root=two_models, device="cpu", precision="bf16", no_half_vae=True)
    assert [p.name for p in manager.list_vaes()] == ["nice-vae.safetensors"]

    own = manager.get("first")
    assert own.vae_name is None and own.vae_dtype == torch.float32
    swapped = manager.get("first", vae="nice-vae")
    assert swapped.vae_name == "nice-vae.safetensors" and manager.current is swapped
    assert swapped.unet is own.unet  # only the VAE was loaded
    assert own.vae_name is None  # a job still holding the old object sees no change
    assert torch.equal(swapped.vae.encoder.conv_in.weight, external.encoder.conv_in.weight)
    assert next(swapped.vae.parameters()).dtype == torch.float32
    assert manager.get("first", vae="nice-vae.safetensors") is swapped
    assert manager.get("first") is swapped and manager.get() is swapped  # no preference: kept
    back = manager.get("first", vae="Automatic")  # no first.vae.* beside it: its own VAE
    assert back.vae_name is None
    assert torch.equal(back.vae.encoder.conv_in.weight, tiny_parts.vae.encoder.conv_in.weight)
    with pytest.raises(ValueError, match="VAE 'missing' not found"):
        manager.get("first", vae="missing")

    # "Automatic": <stem>.vae.safetensors beside the checkpoint
    _write_vae(two_models / "models" / "Stable-diffusion" / "second.vae.safetensors", seed=7)
    manager.refresh()
    assert [i.name for i in manager.list_checkpoints()] == ["first", "second"]
    assert manager.get("second").vae_name == "second.vae.safetensors"
    assert manager.get("second", vae="None").vae_name is None


def test_vae_fp32_copy(two_models: Path) -> None:
    manager = ModelManager(root=two_models, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="no model is loaded"):
        manager.vae_fp32()
    model = manager.get("first")
    vae32 = manager.vae_fp32()
    assert next(vae32.parameters()).dtype == torch.float32
    assert next(model.vae.parameters()).dtype == torch.bfloat16  # the loaded one is untouched


def test_builtin_model_is_shipped_small_and_is_the_default(tmp_path: Path) -> None:
    weights, sidecar = builtin_paths()
    assert builtin_model_path() == weights, "the trained built-in model must be committed"
    bundle = sum(p.stat().st_size for p in [weights, *sidecar.rglob("*")] if p.is_file())
    assert bundle <= 25 * 2**20, f"built-in bundle is {bundle / 2**20:.1f} MB"
    with safe_open(str(weights), "pt") as f:  # SD single-file key layout, fp16
        keys = set(f.keys())
        assert f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").dtype == torch.float16
    assert {
        "first_stage_model.decoder.conv_out.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    } <= keys

    # A fresh install: the user folders are empty, the built-in is listed and picked by default.
    root = tmp_path / "app"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copytree(weights.parent, root / "models" / "builtin")
    manager = ModelManager(root=root, device="cpu", cache_dir=tmp_path / "cache")
    assert [i.title for i in manager.list_checkpoints()] == [manager.builtin_title()]
    assert manager.native_size_of(manager.builtin_title()) == 128  # read from the sidecar, not loaded
    assert manager.current is None
    model = manager.get()  # default: the built-in
    assert (model.family, model.prediction_type, model.native_size) == ("sd1", "epsilon", 128)
    assert model.unet.config.cross_attention_dim == model.text_encoder.config.hidden_size
    assert model.vae.config.latent_channels == 4 and model.vae_scale_factor == 8
    betas = torch.diff(torch.cat([torch.ones(1), model.alphas_cumprod]).log()).neg()  # -log(1-β) ≈ β
    assert len(model.alphas_cumprod) == 1000
    assert betas[0].item() == pytest.approx(0.00085, rel=0.01) and betas[-1].item() == pytest.approx(
        0.0121, rel=0.01
    )


def test_builtin_missing_is_reported_not_fatal(tmp_path: Path, caplog) -> None:
    assert builtin_model_path(tmp_path) is None
    assert "built-in model missing" in caplog.text
    manager = ModelManager(root=tmp_path, device="cpu", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="no checkpoints found"):
        manager.get()


def test_native_size_without_loading(two_models: Path) -> None:
    sd = two_models / "models" / "Stable-diffusion"
    (sd / "bare.safetensors").write_bytes(b"not read")
    (sd / "v.safetensors").write_bytes(b"not read")
    (sd / "v.yaml").write_text("model:\n  params:\n    parameterization: v\n")
    manager = ModelManager(root=two_models, device="cpu")
    assert manager.native_size_of("first") == 64  # tiny sidecar: sample 8 × VAE factor 8
    assert manager.native_size_of("bare") == 512
    assert manager.native_size_of("v") == 768
