"""Where model files live, relative to the app root (the repository checkout)."""

from __future__ import annotations

from pathlib import Path

APP_ROOT = Path(__file__).resolve().parents[2]

CHECKPOINTS_SUBDIR = "Stable-diffusion"
VAE_SUBDIR = "VAE"
BUILTIN_SUBDIR = "builtin"
LORA_SUBDIR = "Lora"

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
# Sidecar folders next to `<stem>.safetensors` holding diffusers configs (model_index.json, ...).
SIDECAR_SUFFIXES = ("", ".config")


def models_root(root: Path | None = None) -> Path:
    return (root or APP_ROOT) / "models"


def configs_root(root: Path | None = None) -> Path:
    """Shipped diffusers config folders: sd1/, sd2/, sd2-v/ (+ the generated tokenizer/)."""
    return models_root(root) / "configs"


def default_cache_dir(root: Path | None = None) -> Path:
    return (root or APP_ROOT) / "cache"


def sidecar_config_dir(weights: Path) -> Path | None:
    """The `<stem>/` or `<stem>.config/` folder beside a checkpoint file, if it holds diffusers configs."""
    for suffix in SIDECAR_SUFFIXES:
        folder = weights.with_name(weights.stem + suffix)
        if folder.is_dir() and (folder / "model_index.json").is_file():
            return folder
    return None
