"""Memory checks shared by the model tests, and running out of memory in a job's stages."""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from engine.models.manager import release_memory
from engine.pipeline import vae_tiling
from engine.upscale import upscalers as upscalers_module


def rss_growth_over_switches(manager: Any, first: str, second: str, rounds: int = 10) -> int:
    """Bytes the process's RSS grew over `rounds` × switching `manager` between two checkpoints,
    after two warm-up rounds (allocator pools, lazily imported modules, caches)."""
    process = psutil.Process()
    for _ in range(2):
        manager.get(first)
        manager.get(second)
    gc.collect()
    before = process.memory_info().rss
    for _ in range(rounds):
        manager.get(first)
        manager.get(second)
    gc.collect()
    return process.memory_info().rss - before


# -- running out of memory ------------------------------------------------------------------------
OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB"


class OutOfMemoryStage:
    """Stands in for a stage that runs out of GPU memory: each call allocates a tensor (what the
    stage held when it failed) and raises torch's out-of-memory error, as on a GPU."""

    def __init__(self) -> None:
        self.tensors: list[weakref.ref] = []

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        held = torch.ones(256, 256)
        self.tensors.append(weakref.ref(held))
        raise torch.OutOfMemoryError(OOM_TEXT)

    def held(self) -> int:
        """How many of the tensors it allocated are still referenced somewhere."""
        return sum(ref() is not None for ref in self.tensors)


class ReleaseSpy:
    """Replaces `release_memory` in the job queue: counts its calls and records, at each, how many
    of `stage`'s tensors were still held (freeing the cache is useless while they are)."""

    def __init__(self, stage: OutOfMemoryStage) -> None:
        self.stage = stage
        self.held_at_calls: list[int] = []

    def __call__(self, device: Any = None) -> None:
        self.held_at_calls.append(self.stage.held())
        release_memory(device)


def inject_out_of_memory(stage_name: str, engine: Any, patch: pytest.MonkeyPatch, stage: OutOfMemoryStage):
    """Make `stage_name` ("UNet", "VAE decode", "VAE encode", "ControlNet" or "upscaler") of
    `engine`'s jobs run out of memory. The UNet and the VAE are the loaded checkpoint's: a job must
    have loaded it."""
    model = engine.models.current
    if stage_name == "UNet":
        patch.setattr(model.unet, "forward", stage)
    elif stage_name == "VAE decode":  # the whole pass, then the strips Settings' auto falls back to
        patch.setattr(model.vae, "decode", stage)
        patch.setattr(vae_tiling, "decode_in_strips", stage)
    elif stage_name == "VAE encode":
        patch.setattr(model.vae, "encode", stage)
        patch.setattr(vae_tiling, "encode_in_strips", stage)
    elif stage_name == "ControlNet":
        load = engine.controlnets.load

        def load_failing(*args: Any, **kwargs: Any) -> Any:
            controlnet, title = load(*args, **kwargs)
            patch.setattr(controlnet, "forward", stage)
            return controlnet, title

        patch.setattr(engine.controlnets, "load", load_failing)
    else:  # the model upscalers' one place of work, for Extras and hires fix alike
        patch.setattr(upscalers_module, "run_tiled", stage)


def saved_files(folder: Path) -> dict[Path, bytes]:
    """Every file under `folder` with its bytes."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@contextlib.contextmanager
def running_out_in(
    stage_name: str, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OutOfMemoryStage, ReleaseSpy]]:
    """Within the block `stage_name` of `engine` runs out of memory; the queue's memory release is
    counted by the ReleaseSpy for the whole test (it must also see what happens afterwards)."""
    from engine.service import jobs

    stage = OutOfMemoryStage()
    release = ReleaseSpy(stage)
    monkeypatch.setattr(jobs, "release_memory", release)
    with monkeypatch.context() as patch:
        inject_out_of_memory(stage_name, engine, patch, stage)
        yield stage, release
