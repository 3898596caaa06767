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
from engine.models.paths import configs_root
from engine.models.tokenizer import ensure_tokenizer_dir, pad_token_for_family

SHIPPED = {("sd1", EPSILON): "sd1", ("sd2", EPSILON): "sd2", ("sd2", V_PREDICTION): "sd2-v"}


def shipped_config_dir(family: str, prediction_type: str = EPSILON) -> Path:
    """`models/configs/<name>/` of the code checkout (not of a data dir: configs ship with the
    code), with its `tokenizer/` generated on first use so that diffusers' pipeline-level
    `from_single_file(config=...)` also finds everything locally."""
    name = SHIPPED.get((family, prediction_type))
    if name is None:
        raise ValueError(f"no shipped config for family {family!r} with {prediction_type!r} prediction")
    folder = configs_root() / name
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"shipped config folder missing: {folder}")
    try:
        ensure_tokenizer_dir(folder / "tokenizer", pad_token=pad_token_for_family(family))
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


MODEL_INDEX: dict[str, Any] = {
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
    family: str = "sd1",
    with_tokenizer: bool = True,
) -> Path:
    """A diffusers config folder (no weights) describing these modules: what a sidecar holds."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {**MODEL_INDEX, "scheduler": ["diffusers", scheduler.get("_class_name", "PNDMScheduler")]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    unet.save_config(folder / "unet")
    vae.save_config(folder / "vae")
    text_encoder.config.save_pretrained(folder / "text_encoder")
    (folder / "scheduler").mkdir(exist_ok=True)
    text = json.dumps(scheduler, indent=2)
    (folder / "scheduler" / "scheduler_config.json").write_text(text, encoding="utf-8")
    if with_tokenizer:
        from engine.models.tokenizer import write_tokenizer_files

        write_tokenizer_files(folder / "tokenizer", pad_token_for_family(family))
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
        raise ValueError("zero-terminal-SNR schedules are not supported yet")
    return alphas_cumprod.to(torch.float32)


def prediction_type_of(config: dict[str, Any]) -> str:
    value = config.get("prediction_type", EPSILON)
    if value not in (EPSILON, V_PREDICTION):
        raise ValueError(f"unsupported prediction_type {value!r} (epsilon and v_prediction are)")
    return str(value)
