"""The upscalers a user can pick: None, Lanczos, Nearest, every model file in models/ESRGAN,
models/RealESRGAN, models/SwinIR and models/DAT (any architecture spandrel recognises), and the
latent modes hires fix offers.

Model files are read through the app's safe loader (`.pth` via the restricted unpickler), handed
to spandrel as a state dict, and run tiled (`tiling.run_tiled`) so large pictures fit in memory.
A model whose scale is below the requested one is applied again (at most 3 passes, as A1111), and
the result is resized to the exact size with Lanczos.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.models.state_dict import load_state_dict
from engine.upscale.ensemble import passes_for, recommended_passes, self_ensemble
from engine.upscale.tiling import run_tiled

MODEL_SUBDIRS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT")
MODEL_SUFFIXES = (".pth", ".safetensors", ".pt", ".ckpt")
PIXEL_UPSCALERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
# A1111's latent upscale modes for hires fix: name → (torch interpolate mode, antialias).
LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
MAX_PASSES = 3


@dataclass(frozen=True)
class UpscalerFile:
    name: str
    path: Path


def scan(folders: list[Path]) -> list[UpscalerFile]:
    found: dict[str, UpscalerFile] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in MODEL_SUFFIXES:
                found.setdefault(path.stem, UpscalerFile(path.stem, path))
    return list(found.values())


def load_model(path: Path) -> Any:
    """A spandrel ImageModelDescriptor for a super-resolution file; ValueError when it is not one."""
    from spandrel import ImageModelDescriptor, ModelLoader

    state = load_state_dict(path)  # clear errors for truncated / non-weight files
    for key in ("params_ema", "params"):  # Real-ESRGAN / BasicSR nest the weights
        if key in state and isinstance(state[key], dict):
            state = state[key]
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except Exception as exc:  # spandrel: UnsupportedModelError or a shape error
        raise ValueError(f"{path.name}: not an upscaler architecture spandrel recognises ({exc})") from exc
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.scale < 2:
        raise ValueError(f"{path.name}: a {descriptor.architecture.name} model, not an upscaler")
    return descriptor.eval()


def compute_dtype(descriptor: Any, device: torch.device) -> torch.dtype:
    """fp16 on a GPU where the architecture takes it (spandrel knows which do): half the memory
    and time of fp32; fp32 on the CPU, where half-precision math is slow."""
    return torch.float16 if device.type == "cuda" and descriptor.supports_half else torch.float32


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = (tensor[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


class UpscalerLibrary:
    def __init__(
        self,
        models_root: Path,
        extra_folders: tuple[Path, ...] = (),
        device: str | torch.device = "cpu",
        settings: Callable[[], Any] | None = None,
    ):
        self.folders = [Path(models_root) / sub for sub in MODEL_SUBDIRS] + [Path(f) for f in extra_folders]
        self.device = torch.device(device)
        # The app's current Settings, read at each call, for what a caller leaves unset (tile size,
        # overlap, self-ensemble): hires fix and SD upscale follow the Settings tab as Extras does.
        self.settings = settings
        self._lock = threading.Lock()
        self._cached: tuple[tuple, Any] | None = None  # one model at a time: they can be large

    def files(self) -> list[UpscalerFile]:
        return scan(self.folders)

    def names(self) -> list[str]:
        return [*PIXEL_UPSCALERS, *(f.name for f in self.files())]

    def model(self, name: str) -> Any:
        return self._load(name)[0]

    def _load(self, name: str) -> tuple[Any, int]:
        """(spandrel descriptor, the self-ensemble passes its file recommends)."""
        match = [f for f in self.files() if f.name == name]
        if not match:
            raise ValueError(
                f"upscaler not found: {name!r} (put model files in models/ESRGAN, RealESRGAN, ...)"
            )
        stat = match[0].path.stat()
        key = (str(match[0].path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cached is None or self._cached[0] != key:
                loaded = load_model(match[0].path).to(self.device)
                if compute_dtype(loaded, self.device) == torch.float16:
                    loaded = loaded.half()
                self._cached = (key, (loaded, recommended_passes(match[0].path)))
            return self._cached[1]

    def upscale(
        self,
        image: Image.Image,
        scale: float,
        name: str,
        tile: int | None = None,
        overlap: int | None = None,
        ensemble: str | None = None,
    ) -> Image.Image:
        """`image` enlarged `scale` times by upscaler `name` (None: unchanged). Unset options come
        from the settings (ESRGAN_tile, ESRGAN_tile_overlap, upscaler_self_ensemble), else 192 / 8 /
        "Automatic". `ensemble` is a choice of that setting ("Automatic": the passes the model file asks
        for)."""
        current = self.settings() if self.settings else None
        tile = getattr(current, "ESRGAN_tile", 192) if tile is None else tile
        overlap = getattr(current, "ESRGAN_tile_overlap", 8) if overlap is None else overlap
        ensemble = getattr(current, "upscaler_self_ensemble", "Automatic") if ensemble is None else ensemble
        if name == "None" or scale == 1:
            return image
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if name in PIXEL_UPSCALERS:
            return image.convert("RGB").resize(target, PIXEL_UPSCALERS[name])
        descriptor, recommended = self._load(name)
        network = self_ensemble(descriptor, passes_for(ensemble, recommended))
        current = image.convert("RGB")
        for _ in range(MAX_PASSES):
            if current.width >= target[0] and current.height >= target[1]:
                break
            with torch.no_grad():
                x = to_tensor(current).to(self.device, compute_dtype(descriptor, self.device))
                y = run_tiled(network, x, descriptor.scale, tile, overlap).float()
            current = to_image(y)
        return current if current.size == target else current.resize(target, Image.Resampling.LANCZOS)
