"""The speed and precision options A1111 users know, applied to a loaded model before each job.

- Attention: diffusers' processors. `sdp` (torch's scaled-dot-product attention, the default),
  `xformers` (when installed), `sliced` (attention in slices: the smallest cards), `None` (plain
  attention, for comparisons). `Automatic`: xformers on CUDA when installed, else sdp.
- FP8 weights (A1111's "FP8 weight"): the UNet's Linear/Conv weights stored in float8 e4m3fn and
  cast to the model dtype layer by layer as they run (diffusers' layerwise casting), which halves
  the UNet's memory. Turning it off needs the full-precision weights again: a reload.
- Channels-last memory format for the UNet (faster convolutions on some GPUs).
- `torch.compile` of the UNet (`Module.compile`, in place, so module names - which LoRA and the
  memory plan rely on - stay the same). Inductor's caches go under the data folder, so the second
  start reads the compiled kernels instead of compiling again.
- TF32 matmuls on Ampere and later GPUs (as A1111 enables them): fp32 work at tensor-core speed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

ATTENTION = ("Automatic", "sdp", "xformers", "sliced", "None")
FP8_STORAGE = ("Disable", "Enable for SDXL", "Enable")
FP8 = torch.float8_e4m3fn


@dataclass(frozen=True)
class SpeedOptions:
    attention: str = "Automatic"
    fp8_storage: str = "Disable"
    channels_last: bool = False
    compile_unet: bool = False


@dataclass(frozen=True)
class Applied:
    """What `apply` did to a model (kept on it, so the next job changes only what differs)."""

    attention: str
    fp8: bool
    channels_last: bool
    compiled: bool


def attention_for(choice: str, device: torch.device) -> str:
    """The attention a choice means on this device ("Automatic" resolved; xformers only on CUDA)."""
    if choice not in ATTENTION:
        raise ValueError(f"unknown attention {choice!r}: use one of {', '.join(ATTENTION)}")
    has_xformers = importlib.util.find_spec("xformers") is not None
    if choice == "Automatic":
        return "xformers" if device.type == "cuda" and has_xformers else "sdp"
    if choice == "xformers" and not (device.type == "cuda" and has_xformers):
        raise ValueError("xformers attention needs the xformers package and a CUDA GPU")
    return choice


def wants_fp8(choice: str, is_sdxl: bool) -> bool:
    if choice not in FP8_STORAGE:
        raise ValueError(f"unknown FP8 storage {choice!r}: use one of {', '.join(FP8_STORAGE)}")
    return choice == "Enable" or (choice == "Enable for SDXL" and is_sdxl)


def needs_reload(model: Any, options: SpeedOptions) -> bool:
    """True when the model's weights are in FP8 and the options no longer want that."""
    applied: Applied | None = model.speed
    return applied is not None and applied.fp8 and not wants_fp8(options.fp8_storage, _is_sdxl(model))


def apply(model: Any, options: SpeedOptions, cache_dir: Path | None = None) -> Applied:
    """Bring the model's UNet to `options`; returns (and records on the model) what now holds.
    Raises ValueError for a choice this machine cannot run. Call `needs_reload` first."""
    before: Applied = model.speed or Applied("sdp", False, False, False)
    attention = attention_for(options.attention, model.device)
    fp8 = wants_fp8(options.fp8_storage, _is_sdxl(model))
    unet = model.unet
    if attention != before.attention:
        _set_attention(unet, attention)
    if fp8 and not before.fp8:
        unet.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=model.dtype)
    if options.channels_last != before.channels_last:
        fmt = torch.channels_last if options.channels_last else torch.contiguous_format
        torch.nn.Module.to(unet, memory_format=fmt)
    if options.compile_unet and not before.compiled:
        _use_compile_cache(cache_dir)
        unet.compile()
    elif before.compiled and not options.compile_unet:
        unet._compiled_call_impl = None  # what Module.compile set: calls go to forward again
    model.speed = Applied(attention, fp8 or before.fp8, options.channels_last, options.compile_unet)
    return model.speed


def _is_sdxl(model: Any) -> bool:
    return model.spec.latents == "sdxl"


def _set_attention(unet: Any, attention: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if attention == "xformers":
        unet.enable_xformers_memory_efficient_attention()
        return
    unet.set_attn_processor(AttnProcessor() if attention == "None" else AttnProcessor2_0())
    if attention == "sliced":
        unet.set_attention_slice("auto")  # half the heads at a time: less memory, a little slower


def _use_compile_cache(cache_dir: Path | None) -> None:
    """Inductor's on-disk caches under the data folder (unless the user set their own)."""
    if cache_dir is not None:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "torch_compile"))


def enable_tf32(device: torch.device) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (no effect before Ampere, none on the CPU)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
