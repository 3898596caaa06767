"""SDXL checkpoints load offline like any other: detection of base, refiner, inpainting and
v-prediction files, the shipped real-size configs, clear errors for broken files, the registry
and model hash, and switching between SD 1.x and SDXL without growing memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.models import loaders
from engine.models.configs import shipped_config_dir
from engine.models.detect import detect_traits
from engine.models.manager import ModelManager
from tests.fakes.memory import rss_growth_over_switches
from tests.fakes.tiny_models import load_tiny, tiny_components, write_configs, write_single_file


@pytest.mark.parametrize(
    ("which", "family", "inpainting"),
    [("base", "sdxl", False), ("refiner", "sdxl-refiner", False), ("inpainting", "sdxl", True)],
)
def test_each_variant_is_detected_and_loads(sdxl_files, which, family, inpainting):
    model = load_tiny(sdxl_files[which])
    assert (model.family, model.is_inpainting, model.prediction_type) == (family, inpainting, "epsilon")
    assert (model.text_encoder is None) == (family == "sdxl-refiner")  # the refiner has only OpenCLIP-G
    assert model.text_encoder_2 is not None and model.tokenizer_2.pad_token == "!"
    assert model.tokenizer is None or model.tokenizer.pad_token == "<|endoftext|>"
    assert len(model.short_hash) == 10


def test_a_v_pred_key_marks_a_v_prediction_file(sdxl_files, tmp_path: Path):
    state = load_file(str(sdxl_files["base"]))
    save_file({**state, "v_pred": torch.tensor([])}, str(tmp_path / "xl-v.safetensors"))
    shutil.copytree(sdxl_files["base"].with_name("xl-base.config"), tmp_path / "xl-v.config")
    (tmp_path / "xl-v.config" / "scheduler" / "scheduler_config.json").unlink()  # no say from the config
    assert load_tiny(tmp_path / "xl-v.safetensors").prediction_type == "v_prediction"


def test_a_bare_file_uses_the_shipped_sdxl_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No sidecar: the shipped config of the detected family builds it (a tiny stand-in here,
    since the shipped configs are real-size)."""
    parts = tiny_components(seed=5, family="sdxl-refiner")
    path = write_single_file(parts, tmp_path / "bare.safetensors", sidecar=None)
    stand_in = write_configs(parts, tmp_path / "configs" / "sdxl-refiner")
    asked: list[str] = []
    monkeypatch.setattr(
        loaders.configs, "shipped_config_dir", lambda f, p="epsilon": asked.append(f) or stand_in
    )
    assert load_tiny(path).family == "sdxl-refiner"
    assert asked == ["sdxl-refiner"]


@pytest.mark.parametrize(
    ("name", "params_b"),
    [("sdxl", 2.567), ("sdxl-refiner", 2.26)],  # UNet parameters, billions
)
def test_the_shipped_configs_describe_the_real_models(name, params_b):
    """Built on the meta device (no memory): the UNet has SDXL's size, the encoders SDXL's widths."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    folder = shipped_config_dir(name)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        g = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    assert abs(sum(p.numel() for p in unet.parameters()) / 1e9 - params_b) < 0.01
    assert g.config.hidden_size == 1280 and g.config.num_hidden_layers == 32
    assert (folder / "tokenizer_2" / "vocab.json").is_file()  # generated on first use
    assert unet.config.sample_size * 8 == 1024


def test_a_mixed_file_is_a_clear_error(sdxl_files, tiny_single_file):
    mixed = {**load_file(str(tiny_single_file)), **load_file(str(sdxl_files["base"]))}
    with pytest.raises(ValueError, match="both SDXL and SD 1.x: a mixed or broken checkpoint"):
        detect_traits(mixed, "mixed.safetensors")


def test_an_sdxl_file_without_its_second_encoder_is_a_clear_error(sdxl_files):
    state = {k: v for k, v in load_file(str(sdxl_files["base"])).items() if "embedders.0" not in k}
    with pytest.raises(
        ValueError, match="incomplete SDXL checkpoint .no conditioner.embedders.0.transformer"
    ):
        detect_traits(state, "cut.safetensors")


def test_a_truncated_file_is_a_clear_error(sdxl_files, tmp_path: Path):
    data = sdxl_files["base"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    shutil.copytree(sdxl_files["base"].with_name("xl-base.config"), tmp_path / "cut.config")
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_tiny(cut)


def test_the_registry_lists_sdxl_like_any_checkpoint(sdxl_files):
    from engine.models.registry import scan_folder

    names = {info.name for info in scan_folder(sdxl_files["base"].parent)}
    assert {"xl-base", "xl-refiner", "xl-inpainting", "xl-folder"} <= names


@pytest.mark.slow
def test_switching_between_sd1_and_sdxl_keeps_rss_flat(tmp_path: Path, sdxl_files, tiny_single_file):
    sd = tmp_path / "models" / "Stable-diffusion"
    sd.mkdir(parents=True)
    for source, name in ((tiny_single_file, "sd1"), (sdxl_files["base"], "xl")):
        shutil.copy(source, sd / f"{name}.safetensors")
        shutil.copytree(source.with_name(source.stem + ".config"), sd / f"{name}.config")
    manager = ModelManager(root=tmp_path, device="cpu", cache_dir=tmp_path / "cache")
    assert manager.get("sd1").family == "sd1" and manager.get("xl").family == "sdxl"
    grown = rss_growth_over_switches(manager, "sd1", "xl")
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 20 switches"


def test_family_and_proposed_size_without_loading(tmp_path: Path, sdxl_files, tiny_single_file):
    """The size picker asks before anything loads: a bare SDXL file proposes 1024 (its shipped
    config), one with a sidecar its own size, a diffusers folder its config's, SD 1.x 512."""
    sd = tmp_path / "models" / "Stable-diffusion"
    sd.mkdir(parents=True)
    shutil.copy(sdxl_files["base"], sd / "bare-xl.safetensors")
    shutil.copy(sdxl_files["refiner"], sd / "refiner.safetensors")
    shutil.copytree(sdxl_files["refiner"].with_name("xl-refiner.config"), sd / "refiner.config")
    shutil.copytree(sdxl_files["folder"], sd / "xl-folder")
    shutil.copy(tiny_single_file, sd / "bare-sd1.safetensors")
    from tests.fakes.tiny_models import write_diffusers_folder

    write_diffusers_folder(tiny_components(seed=4, family="sd2"), sd / "sd2-folder")
    manager = ModelManager(root=tmp_path, device="cpu", cache_dir=tmp_path / "cache")
    assert manager.family_of("bare-xl") == "sdxl" and manager.native_size_of("bare-xl") == 1024
    assert manager.family_of("refiner") == "sdxl-refiner" and manager.native_size_of("refiner") == 64
    assert manager.family_of("xl-folder") == "sdxl" and manager.native_size_of("xl-folder") == 64
    assert manager.family_of("bare-sd1") == "sd1" and manager.native_size_of("bare-sd1") == 512
    assert manager.family_of("sd2-folder") == "sd2"
    native, sizes = manager.size_choices("bare-xl")
    assert native == 1024 and (1216, 832) in sizes and (640, 1536) in sizes
    assert manager.current is None  # nothing was loaded


def test_weights_that_do_not_fit_the_device_load_into_ram(monkeypatch, sdxl_files, tmp_path):
    """A checkpoint (or a refiner beside one) too large for the free GPU memory loads into RAM, as
    a model that computes on the GPU: each job's memory plan then brings its parts over. Here the
    "GPU" is the CPU with a fake free-memory figure; nothing is moved to it."""
    from engine.models import manager as manager_module

    manager = ModelManager(
        root=tmp_path, extra_dirs=[sdxl_files["base"].parent], device="cpu", cache_dir=tmp_path / "cache"
    )
    info = manager.find("xl-refiner")
    assert manager.load_target(info) == torch.device("cpu")  # RAM is the device: nothing to choose
    monkeypatch.setattr(manager, "device", torch.device("cuda"))
    monkeypatch.setattr(manager_module, "free_bytes", lambda device: 20 * 2**30)
    assert manager.load_target(info) == torch.device("cuda")
    monkeypatch.setattr(manager_module, "free_bytes", lambda device: 2**30)  # 1 GiB free
    assert manager.load_target(info) == torch.device("cpu")
    refiner = manager.get_refiner("xl-refiner")
    assert refiner.device == torch.device("cuda")  # where it computes, under the job's plan
    assert all(p.device.type == "cpu" for p in refiner.unet.parameters())
    base = manager.get("xl-base")
    assert base.device.type == "cuda" and next(base.unet.parameters()).device.type == "cpu"


def test_a_ztsnr_key_gives_the_zero_terminal_snr_schedule(sdxl_files, tmp_path: Path):
    """NoobAI-style v-prediction files carry `v_pred` and `ztsnr` keys: v-prediction on the
    rescaled schedule (diffusers' rescale, last ᾱ kept finite as A1111 does), and it generates."""
    from diffusers import DDPMScheduler

    from engine.models.configs import ZTSNR_LAST_ALPHA_BAR
    from engine.pipeline.txt2img import txt2img
    from engine.sampling.schedules import ModelSigmas
    from tests.fakes.tiny_models import tiny_params

    state = load_file(str(sdxl_files["base"]))
    save_file(
        {**state, "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, str(tmp_path / "noob.safetensors")
    )
    shutil.copytree(sdxl_files["base"].with_name("xl-base.config"), tmp_path / "noob.config")
    (tmp_path / "noob.config" / "scheduler" / "scheduler_config.json").unlink()
    model = load_tiny(tmp_path / "noob.safetensors")
    assert model.prediction_type == "v_prediction"
    reference = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True
    ).alphas_cumprod
    assert torch.allclose(model.alphas_cumprod[:-1], reference[:-1], rtol=1e-4, atol=1e-7)
    assert model.alphas_cumprod[-1] == pytest.approx(ZTSNR_LAST_ALPHA_BAR) and reference[-1] == 0
    assert 4000 < float(ModelSigmas.from_alphas_cumprod(model.alphas_cumprod).sigmas.max()) < 5000
    picture = txt2img(model, tiny_params(steps=4, sampler_name="Euler")).images[0]
    assert torch.tensor(list(picture.getdata())).float().std() > 5


def test_a_vae_from_models_vae_on_sdxl(tmp_path: Path, sdxl_files):
    """Any VAE file in models/VAE is offered for SDXL and built with the checkpoint's own VAE
    config; one of another architecture is a clear error and the model keeps its own VAE."""
    from diffusers import AutoencoderKL

    from engine.models.ldm_convert import vae_to_ldm

    vae_dir = tmp_path / "models" / "VAE"
    vae_dir.mkdir(parents=True)
    other = tiny_components(seed=9, family="sdxl").vae
    state = vae_to_ldm(other.state_dict(), other.config, prefix="")
    save_file({k: v.contiguous() for k, v in state.items()}, str(vae_dir / "xl-vae.safetensors"))
    blocks = {"down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2}
    wide = AutoencoderKL(block_out_channels=(8, 16), latent_channels=16, norm_num_groups=4, **blocks)
    state = vae_to_ldm(wide.state_dict(), wide.config, prefix="")
    save_file({k: v.contiguous() for k, v in state.items()}, str(vae_dir / "flux-like.safetensors"))
    manager = ModelManager(
        root=tmp_path, extra_dirs=[sdxl_files["base"].parent], device="cpu", cache_dir=tmp_path / "cache"
    )
    assert {p.name for p in manager.list_vaes()} == {"xl-vae.safetensors", "flux-like.safetensors"}
    own = manager.get("xl-base")
    swapped = manager.get("xl-base", vae="xl-vae")
    assert swapped.vae_name == "xl-vae.safetensors" and swapped.unet is own.unet
    assert torch.equal(swapped.vae.encoder.conv_in.weight, other.encoder.conv_in.weight)
    with pytest.raises(ValueError, match="flux-like.safetensors is not a VAE matching this checkpoint"):
        manager.get("xl-base", vae="flux-like")
    assert manager.current is swapped
