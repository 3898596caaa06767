"""ControlNet model files in `models/ControlNet/`: found by name, loaded once, checked against the
checkpoint they will steer.

Accepted: a diffusers folder (config.json + weights), a diffusers-layout `.safetensors`, and the
single files A1111 users have (LDM layout, `control_model.` prefix or bare; `.safetensors`, or
`.pth`/`.ckpt` through the restricted unpickler). An LDM file takes its architecture from the
loaded checkpoint's UNet (a ControlNet is a copy of the UNet's encoder); diffusers converts the
keys. The SD family is read off the cross-attention width, so an SD2 ControlNet on an SD1 model is
a clear error, not a shape mismatch deep in the UNet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.models.hashing import sha256_of_file, short_hash
from engine.models.state_dict import load_state_dict

SUBDIR = "ControlNet"
ANNOTATORS_SUBDIR = "annotators"
SUFFIXES = (".safetensors", ".pth", ".ckpt", ".bin")
CACHE_SIZE = 3
FAMILY_BY_CONTEXT = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class ControlNetFile:
    name: str
    path: Path

    @property
    def title(self) -> str:
        return self.name


def scan(folder: Path) -> list[ControlNetFile]:
    """Every ControlNet in `folder` (the annotators subfolder is not a model)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and path.name != ANNOTATORS_SUBDIR and (path / "config.json").is_file():
            found.append(ControlNetFile(path.name, path))
        elif path.is_file() and path.suffix.lower() in SUFFIXES:
            found.append(ControlNetFile(path.stem, path))
    return found


def file_hash(path: Path) -> str:
    """A1111's short hash of the file (a folder: of its largest weight file)."""
    if path.is_dir():
        weights = sorted((p for p in path.iterdir() if p.suffix in SUFFIXES), key=lambda p: p.stat().st_size)
        if not weights:
            return "0" * 8
        path = weights[-1]
    return short_hash(sha256_of_file(path))[:8]


def _family(context_dim: int) -> str:
    return FAMILY_BY_CONTEXT.get(int(context_dim), f"context {context_dim}")


def build(path: Path, unet: Any) -> Any:
    """A diffusers ControlNetModel from `path`, shaped for `unet` when the file is LDM layout."""
    from diffusers import ControlNetModel

    if path.is_dir():
        return ControlNetModel.from_pretrained(str(path), local_files_only=True)
    state = load_state_dict(path)
    if any(k.startswith("control_model.") or k.startswith("time_embed.") for k in state):
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        config = dict(ControlNetModel.from_unet(unet, load_weights_from_unet=False).config)
        hint = [k for k in state if "input_hint_block" in k and k.endswith(".weight")]
        if hint:  # the hint encoder's input width: 3 for RGB maps
            config["conditioning_channels"] = int(state[hint[0]].shape[1]) if state[hint[0]].ndim == 4 else 3
        context = [v for k, v in state.items() if k.endswith("attn2.to_k.weight")]
        if context and int(context[0].shape[1]) != int(unet.config.cross_attention_dim):
            raise ValueError(
                f"{path.name} is a {_family(context[0].shape[1])} ControlNet; the loaded checkpoint is "
                f"{_family(unet.config.cross_attention_dim)}"
            )
        state = convert_controlnet_checkpoint(state, config)
        model = ControlNetModel.from_config(config)
    else:
        if "controlnet_cond_embedding.conv_in.weight" not in state:
            raise ValueError(f"{path.name} does not look like a ControlNet (no hint encoder)")
        config = dict(ControlNetModel.from_unet(unet, load_weights_from_unet=False).config)
        model = ControlNetModel.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path.name} does not fit this checkpoint's ControlNet shape "
            f"({len(missing)} missing, {len(unexpected)} unexpected weights)"
        )
    return model


class ControlNetLibrary:
    """The ControlNet folder (and the built-in ones), with loaded models cached by (file, size,
    mtime, device, dtype). The user's folder comes first: its files win a name clash."""

    def __init__(self, folder: Path, extra_folders: tuple[Path, ...] = ()):
        self.folder = Path(folder)
        self.extra_folders = tuple(Path(f) for f in extra_folders)
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._hashes: dict[tuple, str] = {}

    @property
    def annotators(self) -> Path:
        return self.folder / ANNOTATORS_SUBDIR

    def files(self) -> list[ControlNetFile]:
        found: dict[str, ControlNetFile] = {}
        for folder in (self.folder, *self.extra_folders):
            for f in scan(folder):
                found.setdefault(f.title, f)
        return list(found.values())

    def titles(self) -> list[str]:
        return [f.title for f in self.files()]

    def find(self, title: str) -> ControlNetFile:
        name = title.split(" [")[0]  # "name [hash]" as the infotext writes it
        for f in self.files():
            if f.title == name:
                return f
        raise ValueError(f"ControlNet model not found: {title!r} (put it in {self.folder})")

    def title_with_hash(self, f: ControlNetFile) -> str:
        stat = f.path.stat()
        key = (str(f.path), stat.st_mtime_ns, stat.st_size)
        if key not in self._hashes:
            self._hashes[key] = file_hash(f.path)
        return f"{f.title} [{self._hashes[key]}]"

    def load(self, title: str, unet: Any, device: torch.device, dtype: torch.dtype) -> tuple[Any, str]:
        """(the model on `device`, its infotext title "name [hash]")."""
        f = self.find(title)
        stat = f.path.stat()
        key = (str(f.path), stat.st_mtime_ns, stat.st_size, str(device), str(dtype))
        with self._lock:
            if key not in self._cache:
                model = build(f.path, unet)
                self._check_family(model, unet, f)
                self._cache[key] = model.to(device, dtype).eval()
                while len(self._cache) > CACHE_SIZE:  # each is half a UNet: keep a few
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return self._cache[key], self.title_with_hash(f)

    @staticmethod
    def _check_family(model: Any, unet: Any, f: ControlNetFile) -> None:
        mine, theirs = int(model.config.cross_attention_dim), int(unet.config.cross_attention_dim)
        if mine != theirs:
            raise ValueError(
                f"{f.title} is a {_family(mine)} ControlNet; the loaded checkpoint is {_family(theirs)}"
            )
