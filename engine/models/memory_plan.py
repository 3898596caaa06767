"""Which parts of a model stay on the GPU: the automatic memory plan, and the flags that force one.

Three plans, A1111's names (Forge and ComfyUI make the same choice under other names):
- `gpu-only`: every part resident on the GPU; nothing moves. The fastest; the only plan on a CPU.
- `medvram`: one part on the GPU at a time: the text encoders while the prompt is encoded, the UNet
  while it samples, the VAE while it decodes; the others wait in RAM (A1111's `--medvram` idea).
- `lowvram`: nothing resident; every layer comes to the GPU when it runs and leaves after
  (diffusers' leaf-level group offloading). Slowest, smallest: SDXL in a few GB.

A job with the SDXL refiner plans both models at once (`job_parts`): under `gpu-only` both stay
resident, under `medvram` the refiner's parts take their turns with the base's (A1111 swaps the two
checkpoints), under `lowvram` both stream.

`choose_plan` takes the first plan whose expected peak fits the free memory, from the job's size:
the parts' weights at their runtime dtype plus the denoising step's activations. The estimate is
deliberately simple (the activations scale with latent area × batch × the UNet's base width); an
out-of-memory anyway makes the next automatic plan one step lighter
(`ModelManager.after_out_of_memory`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch

GPU_ONLY, MEDVRAM, LOWVRAM = "gpu-only", "medvram", "lowvram"
PLANS = (GPU_ONLY, MEDVRAM, LOWVRAM)  # lightest last
AUTO = "auto"
HEADROOM = 0.9  # of the free memory a plan may count on: allocator fragmentation, cuDNN workspaces
# Activation bytes per (latent pixel × batch row × UNet base channel × byte of dtype) at a
# denoising step's peak with SDP attention (CFG doubles the batch rows): SD 1.5 at 512² then expects
# 0.68 GiB and SDXL at 1024² 2.7 GiB in fp16, in line with published peak-memory figures for both;
# bench/gpu.py measures the real peaks where a GPU is at hand.
ACTIVATION_FACTOR = 140
GIB = 2**30


def free_bytes(device: torch.device) -> float:
    """Bytes a new allocation can take on `device`: CUDA's free memory plus what its caching
    allocator holds unused; the RAM available on the CPU; unknown elsewhere (inf: try it)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        available = free + torch.cuda.memory_reserved(device) - allocated
        # a cap set with set_per_process_memory_fraction binds before the card's free memory does
        capped = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        return available if capped is None else min(available, capped(device) * total - allocated)
    if device.type == "cpu":
        import psutil

        return psutil.virtual_memory().available
    return float("inf")


def job_parts(model: Any, refiner: Any = None) -> dict[str, list[Any]]:
    """The parts a job's plan places, by group: the model's ("text", "unet", "vae") and, when the
    job has a refiner that is another checkpoint, the refiner's ("refiner text", ...)."""
    parts = model.part_groups()
    if refiner is not None and refiner is not model:
        parts.update({f"refiner {name}": group for name, group in refiner.part_groups().items()})
    return parts


def plannable_free(model: Any, refiner: Any = None) -> int | None:
    """The memory a plan for `model` (and the job's refiner) may count on: the device's free
    memory plus what their own parts hold there now (a plan can move them); None on the CPU,
    where nothing moves."""
    if model.device.type == "cpu":
        return None
    parts = job_parts(model, refiner).values()
    held = [m for group in parts for m in group if is_on(m, model.device)]
    return int(min(free_bytes(model.device), 2**62)) + module_bytes(held)


def is_on(module: Any, device: torch.device) -> bool:
    """Whether `module`'s weights are on `device` now (its first parameter's device type)."""
    first = next(module.parameters(), None)
    return first is not None and first.device.type == device.type


def module_bytes(modules: Iterable[Any]) -> int:
    """Parameter and buffer bytes of `modules` (None entries skipped), each tensor counted once."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        if module is None:
            continue
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def largest_layer_bytes(modules: Iterable[Any]) -> int:
    """The biggest single layer's weights: what leaf-level streaming holds on the GPU at once."""
    largest = 0
    for module in modules:
        if module is None:
            continue
        for layer in module.modules():
            if not any(True for _ in layer.children()):
                largest = max(largest, module_bytes([layer]))
    return largest


@dataclass(frozen=True)
class Footprint:
    """Bytes each part needs on the GPU while it runs, at its runtime dtype."""

    text_encoders: int
    unet: int  # with what runs beside it at every step (ControlNets, counted by file size)
    vae: int
    working: int  # the activations of one denoising step at the job's size
    largest_layer: int
    beside: tuple[int, ...] = ()  # other parts with a turn of their own (T5; a refiner's parts)

    @classmethod
    def of(cls, model: Any, width: int, height: int, batch: int, extra_unet_bytes: int = 0) -> Footprint:
        groups = model.part_groups()
        encoders = [*groups["text"], *groups.get("t5", [])]
        latent_pixels = (width // model.vae_scale_factor) * (height // model.vae_scale_factor)
        base_width = _width_per_latent_pixel(model.unet.config)
        itemsize = torch.empty((), dtype=model.dtype).element_size()
        working = int(ACTIVATION_FACTOR * 2 * batch * latent_pixels * base_width * itemsize)
        return cls(
            text_encoders=module_bytes(groups["text"]),
            unet=module_bytes([model.unet]) + extra_unet_bytes,
            vae=module_bytes([model.vae]),
            working=working,
            largest_layer=largest_layer_bytes([model.unet, model.vae, *encoders]),
            beside=(module_bytes(groups["t5"]),) if "t5" in groups else (),  # its own turn under medvram
        )

    def with_refiner(self, refiner: Footprint) -> Footprint:
        """This job's footprint when `refiner` takes over its sampling and decodes: the refiner's
        parts beside the model's; its step's activations when they are the larger."""
        return replace(
            self,
            beside=(*self.beside, refiner.text_encoders, refiner.unet, refiner.vae),
            working=max(self.working, refiner.working),
            largest_layer=max(self.largest_layer, refiner.largest_layer),
        )

    def expected(self, plan: str) -> int:
        """The plan's peak: everything at once, the largest part at once, or one layer at once."""
        parts = (self.text_encoders, self.unet, self.vae, *self.beside)
        if plan == GPU_ONLY:
            return sum(parts) + self.working
        if plan == MEDVRAM:
            return max(parts) + self.working
        return self.largest_layer + self.working


def _width_per_latent_pixel(config: Any) -> float:
    """The activation width the estimate scales with: a UNet's first block width; a transformer's
    token width spread over the latent pixels of its patch (an estimate, as the factor is)."""
    widths = getattr(config, "block_out_channels", None)
    if widths:
        return widths[0]
    patch = getattr(config, "patch_size", 1) or 1
    return config.num_attention_heads * config.attention_head_dim / patch**2


@dataclass(frozen=True)
class PlanChoice:
    plan: str
    expected: int  # bytes at the plan's peak
    free: int | None  # bytes free on the device when chosen; None on a CPU
    why: str

    def describe(self) -> str:
        """One line for the Settings tab and the log."""
        if self.free is None:
            return f"{self.plan}: {self.why}"
        expects = f"expects {self.expected / GIB:.2f} GiB of {self.free / GIB:.2f} GiB free"
        return f"{self.plan}: {expects} ({self.why})"


_WHY = {
    GPU_ONLY: "every part stays on the GPU",
    MEDVRAM: "text encoders, UNet and VAE take turns on the GPU (a refiner's too)",
    LOWVRAM: "each layer comes to the GPU when it runs",
}


def choose_plan(
    free: int | None, footprint: Footprint, forced: str | None = None, lightest_first: int = 0
) -> PlanChoice:
    """The plan for a job. `free`: bytes free on the GPU (None: the model runs on the CPU, where
    nothing moves). `forced`: a plan the user chose (flag or setting). `lightest_first`: how many
    of the heavier plans to skip (raised after an out-of-memory)."""
    if free is None:
        return PlanChoice(GPU_ONLY, footprint.expected(GPU_ONLY), None, "runs on the CPU: nothing to move")
    if forced is not None and forced != AUTO:
        if forced not in PLANS:
            raise ValueError(f"unknown memory plan {forced!r}: use auto, {', '.join(PLANS)}")
        return PlanChoice(forced, footprint.expected(forced), free, f"chosen; {_WHY[forced]}")
    candidates = PLANS[min(lightest_first, len(PLANS) - 1) :]
    for plan in candidates:
        if footprint.expected(plan) <= free * HEADROOM:
            return PlanChoice(plan, footprint.expected(plan), free, _WHY[plan])
    return PlanChoice(LOWVRAM, footprint.expected(LOWVRAM), free, "the lightest plan; even it may not fit")


@dataclass(frozen=True)
class MemoryFlags:
    """A1111's start flags that force a plan (at most one is given)."""

    medvram: bool = False
    lowvram: bool = False
    medvram_sdxl: bool = False  # --medvram for SDXL checkpoints only
    gpu_only: bool = False

    def forced(self, is_sdxl: bool) -> str | None:
        """The plan they force on a model of this kind; None: automatic (or the Settings' choice)."""
        if self.lowvram:
            return LOWVRAM
        if self.medvram or (self.medvram_sdxl and is_sdxl):
            return MEDVRAM
        if self.gpu_only:
            return GPU_ONLY
        return None
