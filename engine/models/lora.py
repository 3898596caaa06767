"""LoRA files from `models/Lora/`, applied per job with `<lora:name:weight>` in a prompt.

Kohya's key layout (what A1111, Civitai and kohya-ss write): `lora_unet_<module path>` and
`lora_te_<module path>` with `.lora_down.weight`, `.lora_up.weight` and `.alpha`, the module path
being the diffusers / transformers name with "." written as "_". LoCon (3×3 down, 1×1 up) is
included; other LyCORIS kinds (LoHa, LoKr) and LDM-named keys are reported as not matching.

Why merged weights and not peft: a job adds Σ strength · (alpha / rank) · up @ down to each
targeted weight inside `applied(...)`, which keeps a copy of every weight it touches and copies it
back on exit, so after the job the model is bit-identical and its module tree (and state-dict
names) never change. peft would wrap modules (renaming their weights) and still run the low-rank
product on every call, which costs more than one merge per job at these sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.models.state_dict import load_state_dict

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
HASH_LEN = 12
# <lora:name:te_multiplier[:unet_multiplier]> with optional te=/unet= named arguments (A1111)
_TAG = re.compile(r"<lora:([^:>]+)((?::[^:>]*)*)>")


@dataclass(frozen=True)
class LoraRequest:
    name: str
    te: float = 1.0
    unet: float = 1.0


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraRequest]]:
    """(prompt without its <lora:...> tags, the requests in order). Raises ValueError for a tag
    whose multiplier is not a number."""
    requests: list[LoraRequest] = []

    def take(match: re.Match[str]) -> str:
        args = [a.strip() for a in match.group(2).split(":")[1:] if a.strip()]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        positional = [a for a in args if "=" not in a]
        try:
            te = float(named.get("te", positional[0] if positional else 1.0))
            unet = float(named.get("unet", positional[1] if len(positional) > 1 else te))
        except ValueError:
            raise ValueError(f"bad LoRA tag {match.group(0)!r}: multipliers must be numbers") from None
        requests.append(LoraRequest(match.group(1).strip(), te, unet))
        return ""

    return _TAG.sub(take, prompt), requests


def lora_short_hash(path: Path) -> str:
    """A1111's hash for LoRA files: for .safetensors the SHA-256 of the data after the header
    (so editing metadata keeps the hash, "AutoV3"), else of the whole file; first 12 digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            (header_len,) = struct.unpack("<Q", f.read(8))
            f.seek(8 + header_len)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:HASH_LEN]


@dataclass
class LoraModule:
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None

    def delta(self, shape: torch.Size) -> torch.Tensor:
        """The full-rank update for a weight of `shape` (Linear or Conv2d), at strength 1."""
        rank = self.down.shape[0]
        scale = (self.alpha / rank) if self.alpha is not None else 1.0
        up, down = self.up.float(), self.down.float()
        if down.dim() == 2:  # Linear
            delta = up @ down
        elif down.shape[2:] == (1, 1):  # 1×1 conv
            delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], down.shape[1], 1, 1)
        else:  # LoCon: k×k down, 1×1 up
            delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
        return (delta * scale).reshape(shape)


@dataclass
class LoraFile:
    name: str
    path: Path
    modules: dict[str, LoraModule] = field(default_factory=dict)  # kohya key prefix -> module
    short_hash: str = ""

    @classmethod
    def load(cls, path: Path) -> LoraFile:
        state = load_state_dict(path)
        modules: dict[str, LoraModule] = {}
        for key in state:
            if key.endswith(".lora_down.weight"):
                prefix = key[: -len(".lora_down.weight")]
                up = state.get(f"{prefix}.lora_up.weight")
                if up is None:
                    raise ValueError(f"{path.name}: {prefix} has lora_down but no lora_up")
                alpha = state.get(f"{prefix}.alpha")
                modules[prefix] = LoraModule(state[key], up, None if alpha is None else float(alpha))
        if not modules:
            raise ValueError(f"{path.name}: no kohya LoRA weights (lora_down/lora_up) in it")
        return cls(path.stem, path, modules, lora_short_hash(path))


def _targets(model) -> dict[str, torch.nn.Module]:
    """Kohya key prefix -> the Linear/Conv2d it patches, for the UNet and the text encoder.
    Text-encoder paths are registered with and without `text_model_` (transformers 4 vs 5)."""
    table: dict[str, torch.nn.Module] = {}
    for name, module in model.unet.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            table["lora_unet_" + name.replace(".", "_")] = module
    for name, module in model.text_encoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            path = name.replace(".", "_")
            table["lora_te_" + path] = module
            if not path.startswith("text_model_"):
                table["lora_te_text_model_" + path] = module
    return table


@contextlib.contextmanager
def applied(
    model, loras: list[tuple[LoraFile, LoraRequest]], notes: list[str] | None = None
) -> Iterator[None]:
    """Within the block, `model`'s UNet and text-encoder weights carry the LoRAs at their
    strengths; on exit every touched weight is copied back from its saved original."""
    if not loras:
        yield
        return
    targets = _targets(model)
    originals: dict[torch.nn.Module, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for lora, request in loras:
                unmatched = 0
                for prefix, lora_module in lora.modules.items():
                    target = targets.get(prefix)
                    if target is None or lora_module.down.shape[1] != target.weight.shape[1]:
                        unmatched += 1
                        continue
                    strength = request.unet if prefix.startswith("lora_unet_") else request.te
                    if strength == 0:
                        continue
                    originals.setdefault(target, target.weight.detach().clone())
                    delta = lora_module.delta(target.weight.shape) * strength
                    target.weight.add_(delta.to(target.weight.dtype))
                if unmatched == len(lora.modules):
                    raise ValueError(f"LoRA {lora.name!r} does not fit this model: none of its weights match")
                if unmatched and notes is not None:
                    notes.append(
                        f"LoRA {lora.name}: {unmatched} of {len(lora.modules)} weights did not match"
                    )
        yield
    finally:
        with torch.no_grad():
            for module, weight in originals.items():
                module.weight.copy_(weight)


@dataclass
class LoraLibrary:
    """The LoRA files of a folder by name (file stem), loaded on first use and kept."""

    folder: Path
    _loaded: dict[Path, tuple[float, LoraFile]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(p.stem for p in self._files())

    def files(self) -> list[Path]:
        return sorted(self._files())

    def refresh(self) -> None:
        """Forget the loaded files (the folder itself is listed afresh on every call)."""
        self._loaded.clear()

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.rglob("*") if p.suffix.lower() in LORA_SUFFIXES and p.is_file()]

    def get(self, name: str) -> LoraFile | None:
        path = next((p for p in sorted(self._files()) if p.stem == name), None)
        if path is None:
            return None
        mtime = path.stat().st_mtime
        cached = self._loaded.get(path)
        if cached is None or cached[0] != mtime:
            self._loaded[path] = (mtime, LoraFile.load(path))
        return self._loaded[path][1]
