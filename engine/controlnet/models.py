"""ControlNet model files in `models/ControlNet/`: found by name, loaded once, checked against the
checkpoint they will steer.

Accepted: a diffusers folder (config.json + weights), a diffusers-layout `.safetensors` (how most
SDXL ControlNets ship), and the single files A1111 users have (original layout, `control_model.`
prefix or bare; `.safetensors`, or `.pth`/`.ckpt` through the restricted unpickler). A single file
takes its architecture from the loaded checkpoint's UNet, changed where its weights differ
(`engine.controlnet.layout`). The family (SD 1.x, SD 2.x, SDXL, SDXL refiner) is read off the
weights, so a ControlNet of another family is a clear error naming both, not a shape mismatch deep
in the UNet, and the library can say which checkpoints each file is for.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from engine.controlnet.layout import Kind, architecture, is_ldm, ldm_to_diffusers, mismatch
from engine.models.hashing import sha256_of_file, short_hash
from engine.models.manager import release_memory
from engine.models.state_dict import load_state_dict, read_key_shapes

SUBDIR = "ControlNet"
ANNOTATORS_SUBDIR = "annotators"
SUFFIXES = (".safetensors", ".pth", ".ckpt", ".bin")
CACHE_SIZE = 3


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


def kind_of_file(path: Path) -> Kind:
    """What a ControlNet fits, from a folder's config or a file's weight shapes (a safetensors
    header is enough; a pickle is read whole)."""
    if path.is_dir():
        return Kind.of_config(json.loads((path / "config.json").read_text(encoding="utf-8")))
    return Kind.of_shapes(read_key_shapes(path))


def build(path: Path, unet: Any, checkpoint: str | None = None) -> Any:
    """A diffusers ControlNetModel from `path`, shaped by its weights (single files) and checked
    against `unet` first: ValueError naming both families (`checkpoint`: the checkpoint's family
    label) when it cannot steer it."""
    from diffusers import ControlNetModel

    unet_kind = Kind.of_config(unet.config)
    if path.is_dir():
        _refuse(mismatch(path.name, kind_of_file(path), unet_kind, checkpoint))
        return ControlNetModel.from_pretrained(str(path), local_files_only=True)
    state = load_state_dict(path)
    kind = Kind.of_shapes({k: tuple(v.shape) for k, v in state.items()})
    _refuse(mismatch(path.name, kind, unet_kind, checkpoint))
    with torch.device("meta"):  # only its config is wanted: no memory for a second encoder
        base = dict(ControlNetModel.from_unet(unet, load_weights_from_unet=False).config)
    if is_ldm(state):
        state = ldm_to_diffusers(state, base["layers_per_block"])
    if not {"conv_in.weight", "controlnet_cond_embedding.conv_in.weight"} <= state.keys():
        raise ValueError(f"{path.name} does not look like a ControlNet (no hint encoder)")
    model = ControlNetModel.from_config(architecture(state, base))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a weight of another shape
        raise ValueError(f"{path.name} does not fit this checkpoint's ControlNet shape: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"{path.name} does not fit this checkpoint's ControlNet shape "
            f"({len(missing)} missing, {len(unexpected)} unexpected weights)"
        )
    return model


def _refuse(reason: str | None) -> None:
    if reason is not None:
        raise ValueError(reason)


class _CacheKey(NamedTuple):
    path: str
    mtime_ns: int
    size: int
    device: str
    dtype: str
    fits: Kind  # the kind of UNet it was built for


class ControlNetLibrary:
    """The ControlNet folder (and the built-in ones), with loaded models cached by (file, size,
    mtime, device, dtype, kind of UNet). The user's folder comes first: its files win a name clash.

    The cache belongs to one checkpoint at a time (`follow_checkpoint`): when another one is
    loaded, the cached models leave the device, so they never hold GPU memory that the new
    checkpoint needs."""

    def __init__(self, folder: Path, extra_folders: tuple[Path, ...] = ()):
        self.folder = Path(folder)
        self.extra_folders = tuple(Path(f) for f in extra_folders)
        self._lock = threading.Lock()
        self._cache: OrderedDict[_CacheKey, Any] = OrderedDict()
        self._parked: set[_CacheKey] = set()  # whose model waits in CPU RAM
        # The UNet the cache was last used with; weak, so the library keeps no old checkpoint alive.
        self._unet: weakref.ref | None = None
        self._hashes: dict[tuple, str] = {}
        self._families: dict[tuple, str] = {}

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

    def family(self, f: ControlNetFile) -> str:
        """The family `f` is for ("SD 1.x", "SDXL", ...; "unknown" when it cannot be read)."""
        stat = f.path.stat()
        key = (str(f.path), stat.st_mtime_ns, stat.st_size)
        if key not in self._families:
            try:
                self._families[key] = kind_of_file(f.path).label
            except (ValueError, OSError, KeyError):  # unreadable, or a config without the fields
                self._families[key] = "unknown"
        return self._families[key]

    def listing(self) -> list[tuple[str, str]]:
        """(title, family) of every ControlNet, so a list can say which checkpoints each is for."""
        return [(f.title, self.family(f)) for f in self.files()]

    def load(
        self, title: str, unet: Any, device: torch.device, dtype: torch.dtype, checkpoint: str | None = None
    ) -> tuple[Any, str]:
        """(the model on `device`, its infotext title "name [hash]"). `checkpoint`: the loaded
        checkpoint's family label, for the error when the ControlNet is for another family."""
        f = self.find(title)
        stat = f.path.stat()
        # A single file is shaped after the UNet it was loaded for: another kind of UNet builds
        # (and checks) it again rather than reuse a model that does not fit.
        fits = Kind.of_config(unet.config)
        key = _CacheKey(str(f.path), stat.st_mtime_ns, stat.st_size, str(device), str(dtype), fits)
        with self._lock:
            self._follow(unet)
            if key not in self._cache:
                model = build(f.path, unet, checkpoint)
                self._cache[key] = model.to(device, dtype).eval()
                while len(self._cache) > CACHE_SIZE:  # each is half a UNet: keep a few
                    self._parked.discard(self._cache.popitem(last=False)[0])
            elif key in self._parked:  # set aside at a checkpoint switch: back to the device
                self._cache[key].to(device)
                self._parked.discard(key)
            self._cache.move_to_end(key)
            return self._cache[key], self.title_with_hash(f)

    def follow_checkpoint(self, unet: Any) -> None:
        """The checkpoint in use is now the one with `unet`. On a switch every cached ControlNet
        leaves the device: one shaped for another kind of UNet is dropped (it would be built
        again for this one anyway), the others wait in CPU RAM until a job asks for them, which
        costs a copy to the device and not a read from disk. `load` calls this itself; calling
        it as soon as a checkpoint is loaded also frees the device for jobs without ControlNet."""
        with self._lock:
            self._follow(unet)

    def _follow(self, unet: Any) -> None:
        previous = self._unet() if self._unet is not None else None
        if previous is unet:
            return
        # No previous UNet alive is a switch too: the old checkpoint was freed before this one.
        self._unet = weakref.ref(unet)
        self._leave_device(Kind.of_config(unet.config))

    def _leave_device(self, fits: Kind) -> None:
        """Drop the cached models built for another kind of UNet than `fits`; move the others to
        CPU RAM (`load` brings one back to the device when a job asks for it)."""
        devices = {key.device for key in self._cache if key not in self._parked}
        for key in list(self._cache):
            if key.fits != fits:
                del self._cache[key]
                self._parked.discard(key)
            elif key not in self._parked:
                self._cache[key].to("cpu")
                self._parked.add(key)
        # PyTorch's caching allocator keeps what was freed: hand it back, so the free memory the
        # driver reports (which decides where a refiner is loaded) includes it.
        for device in devices:
            release_memory(torch.device(device))
