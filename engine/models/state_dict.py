"""Reading checkpoint files into flat `{key: tensor}` dicts, with clear errors for bad files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from engine.models.safe_pickle import load_pickle_checkpoint

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a `.safetensors` or (safely unpickled) `.ckpt`/`.pt` file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _tensors_only(load_pickle_checkpoint(path), path)
    raise ValueError(f"{path.name}: unsupported checkpoint format {suffix!r} (use .safetensors or .ckpt)")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError, or others
        raise ValueError(
            f"{path.name} is not a valid .safetensors file (truncated or corrupt?): {exc}"
        ) from exc


def _tensors_only(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Lightning checkpoints nest the weights under "state_dict" (sometimes twice).
    while isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path.name} does not hold a state dict (found {type(obj).__name__})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path.name} holds no tensors")
    return tensors


def read_key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key → shape without loading the weights where the format allows it (safetensors header)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:
            raise ValueError(
                f"{path.name} is not a valid .safetensors file (truncated or corrupt?): {exc}"
            ) from exc
    return {k: tuple(v.shape) for k, v in load_state_dict(path).items()}
