"""The diffusers config folders a checkpoint is built from, and its training noise schedule.

Single-file checkpoints hold weights only; the architecture comes from a local folder in diffusers
layout (model_index.json, unet/ vae/ text_encoder/ scheduler/ configs). Either the checkpoint's own
sidecar folder (`<stem>/` or `<stem>.config/`) or one of the shipped `models/configs/{sd1,sd2,sd2-v}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.models.detect import EPSILON, V_PREDICTION
from engine.models.families import FLUX, SD1, SD2, SD3, SDXL, SDXL_REFINER, family
from engine.models.paths import configs_root
from engine.models.tokenizer import ensure_tokenizer_dir, tokenizer_folder


def shipped_config_dir(family_name: str, prediction_type: str = EPSILON) -> Path:
    """`models/configs/<name>/` of the code checkout (not of a data dir: configs ship with the
    code), with its tokenizer folders generated on first use so that diffusers' pipeline-level
    `from_single_file(config=...)` also finds everything locally. SD2's 768-v model has its own
    folder (another sample size and scheduler); every other family keeps one folder and its
    prediction type is carried by the loaded model."""
    spec = family(family_name)
    if prediction_type not in (EPSILON, V_PREDICTION):
        raise ValueError(f"unsupported prediction type {prediction_type!r}")
    if prediction_type == V_PREDICTION and family_name not in (SD2, SDXL):
        raise ValueError(f"no shipped config for {spec.label} with {prediction_type!r} prediction")
    name = "sd2-v" if (family_name, prediction_type) == (SD2, V_PREDICTION) else spec.config
    folder = configs_root() / name
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"shipped config folder missing: {folder}")
    try:
        for slot in spec.encoders:
            ensure_tokenizer_dir(folder / tokenizer_folder(slot.component), pad_token=slot.pad_token)
    except OSError:
        pass  # read-only install: our own loaders never need the folder's tokenizer
    return folder


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler" / "scheduler_config.json"
    return read_json(path) if path.is_file() else {}


def component_config(folder: Path, component: str) -> dict[str, Any]:
    return read_json(folder / component / "config.json")


def diffusers_family(folder: Path) -> str:
    """A diffusers folder's family from its configs: SD 3 and Flux have their transformer in
    `transformer/` instead of a UNet; SDXL UNets take SDXL's size ids
    (`addition_embed_type` "text_time") and the refiner has no first text encoder; SD2 repos pad
    with "!" (OpenCLIP) and use 1024-wide cross-attention, SD1 neither."""
    transformer = folder / "transformer" / "config.json"
    if transformer.is_file():
        name = read_json(transformer).get("_class_name")
        if name == "SD3Transformer2DModel":
            return SD3
        if name == "FluxTransformer2DModel":
            return FLUX
        raise ValueError(f"{folder.name}: a {name} model is not supported yet")
    unet = component_config(folder, "unet")
    if unet.get("addition_embed_type") == "text_time":
        return SDXL if (folder / "text_encoder" / "config.json").is_file() else SDXL_REFINER
    special = folder / "tokenizer" / "special_tokens_map.json"
    if special.is_file():
        pad = read_json(special).get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        return SD2 if pad == "!" else SD1
    return SD2 if unet.get("cross_attention_dim") == 1024 else SD1


MODEL_INDEX: dict[str, Any] = {  # SD 1.x/2.x; SDXL folders name their second encoder too
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_config_folder(
    folder: Path,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    scheduler: dict[str, Any],
    family_name: str = "sd1",
    with_tokenizer: bool = True,
    text_encoder_2: Any = None,
) -> Path:
    """A diffusers config folder (no weights) describing these modules: what a sidecar holds.
    `text_encoder` is None for the SDXL refiner (it has only `text_encoder_2`)."""
    spec = family(family_name)
    folder.mkdir(parents=True, exist_ok=True)
    index = {**MODEL_INDEX, "scheduler": ["diffusers", scheduler.get("_class_name", "PNDMScheduler")]}
    modules = {"text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    if len(spec.encoders) > 1 or spec.encoders[0].component != "text_encoder":
        index["_class_name"] = "StableDiffusionXLPipeline"
        for slot in ("text_encoder", "text_encoder_2"):
            cls = type(modules[slot]).__name__ if modules[slot] is not None else None
            index[slot] = ["transformers", cls] if cls else [None, None]
            index[tokenizer_folder(slot)] = ["transformers", "CLIPTokenizer"] if cls else [None, None]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    unet.save_config(folder / "unet")
    vae.save_config(folder / "vae")
    for slot in spec.encoders:
        modules[slot.component].config.save_pretrained(folder / slot.component)
    (folder / "scheduler").mkdir(exist_ok=True)
    text = json.dumps(scheduler, indent=2)
    (folder / "scheduler" / "scheduler_config.json").write_text(text, encoding="utf-8")
    if with_tokenizer:
        from engine.models.tokenizer import write_tokenizer_files

        for slot in spec.encoders:
            write_tokenizer_files(folder / tokenizer_folder(slot.component), slot.pad_token)
    return folder


def alphas_cumprod_from_config(config: dict[str, Any]) -> torch.Tensor:
    """ᾱ_t (float32, length T) of the training schedule described by a diffusers scheduler config.

    Computed in float64 like the original LDM `make_beta_schedule` (which A1111 uses), rather than
    diffusers' float32, so σ tables match A1111's to the last bit that matters.
    """
    steps = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 0.00085))
    end = float(config.get("beta_end", 0.012))
    schedule = config.get("beta_schedule", "scaled_linear")
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(start, end, steps, dtype=torch.float64)
    else:  # e.g. squaredcos_cap_v2: let diffusers compute the schedules we do not spell out
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(config).alphas_cumprod.to(torch.float32)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    if config.get("rescale_betas_zero_snr"):
        alphas_cumprod = zero_terminal_snr(alphas_cumprod)
    return alphas_cumprod.to(torch.float32)


# ᾱ of the last step after the zero-terminal-SNR rescale: A1111's value, which keeps σ_max finite
# (≈ 4 500) so the σ-space samplers can start from it; a true 0 would be σ = ∞.
ZTSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


def zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed": shift and
    scale √ᾱ so that the last step is pure noise and the first unchanged. v-prediction fine-tunes
    trained on it (NoobAI-XL v-pred and others) mark themselves with a `ztsnr` key."""
    root = alphas_cumprod.double().sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    rescaled = root**2
    rescaled[-1] = ZTSNR_LAST_ALPHA_BAR
    return rescaled.to(alphas_cumprod.dtype)


def prediction_type_of(config: dict[str, Any]) -> str:
    value = config.get("prediction_type", EPSILON)
    if value not in (EPSILON, V_PREDICTION):
        raise ValueError(f"unsupported prediction_type {value!r} (epsilon and v_prediction are)")
    return str(value)
