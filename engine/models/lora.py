"""LoRA files from `models/Lora/`, applied per job with `<lora:name:weight>` in a prompt.

Kohya's key layout (what A1111, Civitai and kohya-ss write): `lora_unet_<module path>` and
`lora_te_<module path>` with `.lora_down.weight`, `.lora_up.weight` and `.alpha`, the module path
being the diffusers / transformers name with "." written as "_". LoCon (k×k down, 1×1 up) is
included; other LyCORIS kinds (LoHa, LoKr, LoCon's Tucker `lora_mid`) are reported as not matching.

SDXL files name the text encoders `lora_te1_` (CLIP-L) and `lora_te2_` (OpenCLIP-G, by its
transformers names), and the UNet either by diffusers' names or, as kohya's SDXL trainer does, by
the original UNet's (`input_blocks_4_1_...`, `middle_block_...`, `output_blocks_...`,
`label_emb_0_0`); both are registered for every UNet, the original numbering derived from the
UNet's own config. A key whose module this model lacks is counted in the job's notes.

Why merged weights and not peft: a job adds Σ strength · (alpha / rank) · up @ down to each
targeted weight inside `applied(...)`, which keeps a copy of every weight it touches and copies it
back on exit, so after the job the model is bit-identical and its module tree (and state-dict
names) never change. The copies wait in CPU RAM, as A1111's do: beside the weights on the GPU they
would cost as much VRAM as every weight a large LoRA touches. peft would wrap modules (renaming
their weights) and still run the low-rank product on every call, which costs more than one merge
per job at these sizes.
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

from engine.models.ldm_convert import UNET_PREFIX, unet_to_ldm
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

    def fits(self, weight: torch.Tensor) -> bool:
        """Whether the update has `weight`'s shape: same in/out width, and for a k×k convolution
        a k×k down (LoCon); a Linear or 1×1 layer takes 2-D or 1×1 factors alike."""
        down, up = self.down, self.up
        if up.shape[0] != weight.shape[0] or down.shape[1] != weight.shape[1]:
            return False
        if up.shape[1] != down.shape[0] or any(k != 1 for k in up.shape[2:]):
            return False
        kernel = tuple(weight.shape[2:])
        if any(k != 1 for k in kernel):
            return tuple(down.shape[2:]) == kernel
        return all(k == 1 for k in down.shape[2:])

    def delta(self, shape: torch.Size, device: torch.device | str | None = None) -> torch.Tensor:
        """The full-rank update for a weight of `shape` (Linear or Conv2d), at strength 1, in
        float32 on `device` (where the weight is: the product is the costly part, and a file is
        loaded on the CPU, so the factors move, never the weight). None: where the factors are."""
        rank = self.down.shape[0]
        scale = (self.alpha / rank) if self.alpha is not None else 1.0
        up, down = self.up.to(device, torch.float32), self.down.to(device, torch.float32)
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


_LINEAR_OR_CONV = (torch.nn.Linear, torch.nn.Conv2d)
_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)
# kohya's SDXL trainer: te1 is CLIP-L (diffusers' text_encoder), te2 OpenCLIP-G (text_encoder_2)
_XL_ENCODERS = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def _kohya(prefix: str, module_path: str) -> str:
    return prefix + module_path.replace(".", "_")


def _original_unet_names(unet, modules: dict[str, torch.nn.Module]) -> dict[str, str]:
    """diffusers module path -> the original UNet's (input_blocks / middle_block / output_blocks
    ...), by the rules our single-file export uses: they number the blocks from this UNet's config
    (layers per block, which levels have attention), so the tiny test UNets map like the real one.
    A UNet that layout cannot express gets no original names, only diffusers'."""
    owner = {id(module.weight): name for name, module in modules.items()}
    try:  # unet_to_ldm passes the values through, so each weight tells whose new name it got
        ldm = unet_to_ldm({f"{name}.weight": m.weight for name, m in modules.items()}, unet.config)
    except (ValueError, KeyError):
        return {}
    return {owner[id(w)]: k.removeprefix(UNET_PREFIX).removesuffix(".weight") for k, w in ldm.items()}


def _encoders(model) -> dict[str, torch.nn.Module | None]:
    """Kohya text-encoder prefix -> the model's encoder, None where its family has none (the SDXL
    refiner's CLIP-L). SD 1.x/2.x have one encoder, kohya's `lora_te_`."""
    components = [slot.component for slot in model.spec.encoders]
    if "text_encoder_2" not in components:
        return {"lora_te_": model.text_encoder}
    return {prefix: getattr(model, c) if c in components else None for c, prefix in _XL_ENCODERS.items()}


def _targets(model) -> dict[str, torch.nn.Module]:
    """Kohya key prefix -> the Linear/Conv2d it patches, for the UNet and the text encoders.
    Text-encoder paths are registered with and without `text_model_` (transformers 4 vs 5)."""
    modules = {n: m for n, m in model.unet.named_modules() if isinstance(m, _LINEAR_OR_CONV)}
    table = {_kohya("lora_unet_", name): module for name, module in modules.items()}
    for name, original in _original_unet_names(model.unet, modules).items():
        table.setdefault(_kohya("lora_unet_", original), modules[name])
    for prefix, encoder in _encoders(model).items():
        if encoder is None:
            continue
        for name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear):
                table[_kohya(prefix, name)] = module
                if not name.startswith("text_model."):
                    table[_kohya(prefix + "text_model_", name)] = module
    return table


def _notes(
    lora: LoraFile, label: str, unmatched: list[str], absent: list[str], missing: tuple[str, ...]
) -> list[str]:
    """What the job's notes say about the keys of `lora` that were not applied."""
    notes = []
    if absent:
        prefixes = ", ".join(p + "*" for p in missing if any(k.startswith(p) for k in absent))
        notes.append(
            f"LoRA {lora.name}: {len(absent)} weights for a text encoder the {label} model "
            f"does not have were not applied ({prefixes})"
        )
    if unmatched:
        shown = ", ".join(unmatched[:3]) + (", ..." if len(unmatched) > 3 else "")
        notes.append(
            f"LoRA {lora.name}: {len(unmatched)} of {len(lora.modules)} weights did not match ({shown})"
        )
    return notes


class WeightBackups:
    """The original weights of the modules a job patches, kept in CPU RAM in their own dtype (a
    copy beside each weight on the GPU would cost as much VRAM as the weights themselves), and
    copied back into the very same tensors, bit for bit, by `restore`."""

    def __init__(self) -> None:
        self.saved: dict[torch.nn.Module, torch.Tensor] = {}

    def save(self, module: torch.nn.Module) -> None:
        """Keep `module`'s weight as it is now, unless it is kept already (a second LoRA on the
        same layer must not save the first one's result as the original)."""
        if module not in self.saved:
            self.saved[module] = module.weight.detach().to("cpu", copy=True)

    def restore(self) -> None:
        """Copy every saved weight back in place (across devices; same dtype, so exact)."""
        with torch.no_grad():
            for module, original in self.saved.items():
                module.weight.copy_(original)


def _add_delta(weight: torch.Tensor, lora_module: LoraModule, strength: float) -> None:
    """weight += strength · the module's update. The update is made on the weight's device (the
    file's factors are on the CPU) in float32, then cast to the weight's dtype, so the in-place
    add never mixes devices and half-precision weights get one rounding, not one per factor."""
    delta = lora_module.delta(weight.shape, weight.device) * strength
    if weight.dtype in _FLOAT8:  # FP8 weight storage has no arithmetic: add in float32, store back
        weight.copy_((weight.float() + delta).to(weight.dtype))
        return
    weight.add_(delta.to(weight.dtype))


@contextlib.contextmanager
def applied(
    model, loras: list[tuple[LoraFile, LoraRequest]], notes: list[str] | None = None
) -> Iterator[None]:
    """Within the block, `model`'s UNet and text-encoder weights carry the LoRAs at their
    strengths; on exit (an error included) every touched weight is copied back from its original,
    saved in CPU RAM (`WeightBackups`)."""
    if not loras:
        yield
        return
    targets = _targets(model)
    missing_encoders = tuple(p for p, encoder in _encoders(model).items() if encoder is None)
    backups = WeightBackups()
    try:
        with torch.no_grad():
            for lora, request in loras:
                unmatched: list[str] = []
                absent: list[str] = []  # for a text encoder this family lacks: not the file's fault
                for prefix, lora_module in lora.modules.items():
                    target = targets.get(prefix)
                    if target is None or not lora_module.fits(target.weight):
                        (absent if prefix.startswith(missing_encoders) else unmatched).append(prefix)
                        continue
                    strength = request.unet if prefix.startswith("lora_unet_") else request.te
                    if strength == 0:
                        continue
                    backups.save(target)
                    _add_delta(target.weight, lora_module, strength)
                if len(unmatched) + len(absent) == len(lora.modules):
                    raise ValueError(f"LoRA {lora.name!r} does not fit this model: none of its weights match")
                if notes is not None:
                    notes.extend(_notes(lora, model.spec.label, unmatched, absent, missing_encoders))
        yield
    finally:
        backups.restore()


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
