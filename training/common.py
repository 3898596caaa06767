"""What both training stages share: device choice, seeded per-step RNG, EMA, checkpoints, grids."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast: measured 2.1× (VAE) and 1.4× (UNet) faster than fp32 on this AVX-512 CPU,
    and the usual mixed precision on a GPU. Weights and optimizer state stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def step_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The numpy RNG for one step: a function of (seed, stage, step) only, so a resumed run draws
    exactly the batches an uninterrupted one would have."""
    return np.random.default_rng([seed, sum(map(ord, stage)), step])


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(step_rng(seed, stage + "/torch", step).integers(2**62)))
    return g


class _Steps(torch.utils.data.Dataset):
    def __init__(self, make: Callable[[int], Any], start: int, stop: int) -> None:
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> Any:
        return self.make(self.start + i)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # the workers are many already: don't oversubscribe the cores


def step_batches(make: Callable[[int], Any], start: int, stop: int, workers: int = 0) -> Iterator[Any]:
    """`make(step)` for each step in [start, stop), in order. Every stage's batch is a pure function
    of its step (`step_rng`), so with `workers` > 0 forked worker processes make them ahead and the
    training sees exactly the batches it would see with 0. On a GPU the per-step CPU work (canny
    maps, patch crops) was the bottleneck: the ControlNet trained at 4.3 steps/s on one core."""
    if workers <= 0:
        return (make(step) for step in range(start, stop))
    loader = torch.utils.data.DataLoader(
        _Steps(make, start, stop),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        worker_init_fn=_one_thread,
        multiprocessing_context="fork",  # the closures and the picture pools are shared, not pickled
    )
    return iter(loader)


class EMA:
    """Exponential moving average of a module's weights (what gets shipped: smoother samples)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        # Warm-up: early on the average would be dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)


def cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress)))


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a run killed mid-save keeps its previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def check_resume_config(state: dict[str, Any], config: Any, path: Path) -> None:
    """A run resumes only with the settings it started with (else its LR schedule, noise, ... change
    mid-way and the result is neither run): say which differ."""
    stored, wanted = state.get("config", {}), config_dict(config)
    defaults = config_dict(type(config)())  # a setting added since the run began had its default
    changed = {
        k: (stored.get(k, defaults[k]), v) for k, v in wanted.items() if stored.get(k, defaults[k]) != v
    }
    if changed:
        raise SystemExit(
            f"{path} was started with other settings {changed} (stored, given): pass the same --set"
        )


def save_grid(images: list[np.ndarray], path: Path, columns: int) -> None:
    """Tile equally sized uint8 HWC images into one PNG."""
    h, w = images[0].shape[:2]
    rows = (len(images) + columns - 1) // columns
    canvas = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] NCHW tensor → list of uint8 HWC arrays."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).cpu().numpy())


def to_tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 HWC images → [-1, 1] float NCHW."""
    arr = np.stack(images) if isinstance(images, list) else images
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass
class LogWriter:
    """Appends one JSON object per line to <run>/<stage>_log.jsonl (kept across resumes)."""

    path: Path

    def write(self, **record: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"time": round(time.time(), 1), **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class Deadline:
    """Stop-by wall clock (``--max-minutes``): the loop checkpoints and exits cleanly when reached."""

    at: float | None

    @classmethod
    def in_minutes(cls, minutes: float | None) -> Deadline:
        return cls(None if minutes is None else time.monotonic() + minutes * 60)

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


def config_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
