"""One GPU run: our txt2img against diffusers on SD 1.5's and SDXL's real architectures, eager and
compiled, and generation under memory caps with the automatic memory plan.

Random weights in the shipped configs' architectures (a real checkpoint's speed and memory without
one), fp16, Euler on the "Uniform" σ schedule, CFG 7, in one process. Prints one JSON line:
- `sd15` (512², batch 1 and 4) and `sdxl` (1024², batch 1): for each batch, eager and with the UNet
  under `torch.compile`, our and diffusers' seconds, it/s (steps ÷ seconds, prompt encoding and
  decode included) and peak GPU memory, after one warm-up each (its time, compilation included, is
  `warmup_*_s`); `it_s_ratio` = our it/s ÷ diffusers' it/s (≥ 1.0: our loop is no slower).
  `headline_it_s_ratio` gathers the ratios. diffusers' SDXL pipeline decodes in fp32, as the SDXL
  VAE config asks (`force_upcast`); ours decodes in fp16 unless that gives NaN.
- `caps`: SD 1.5 at 512² under a 2 GiB cap and SDXL at 1024² under 4 GiB, through the job queue as
  the app runs them: the automatic plan's choice, its time per image against the same job without
  the cap, and whether the plan forced to gpu-only ends with Atelier's out-of-memory error.

Work runs in order of importance: the eager comparisons and the caps first, then the compiled
configurations, each only when its estimate fits what is left of `--budget` (skipped otherwise,
and the JSON says so). Progress and each result as it comes go to stderr.

    .venv/bin/python bench/gpu.py                        # CUDA; planned for 7 minutes on an H100
    .venv/bin/python bench/gpu.py --only caps
    .venv/bin/python bench/gpu.py --device cpu --tiny --steps 2 --no-compile   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

START = time.monotonic()  # the budget counts the imports of torch and diffusers too

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.reference import diffusers_euler_pipeline, diffusers_sdxl_pipeline  # noqa: E402
from engine.models.manager import release_memory  # noqa: E402
from engine.models.memory_plan import GPU_ONLY, Footprint, choose_plan, plannable_free  # noqa: E402
from engine.models.residency import Residency  # noqa: E402
from engine.models.types import LoadedModel  # noqa: E402
from engine.pipeline.txt2img import txt2img  # noqa: E402
from engine.schema.params import GenerationParams  # noqa: E402
from engine.service.jobs import Job, JobQueue  # noqa: E402
from engine.service.memory import OutOfMemory, peak_memory_gib  # noqa: E402

PROMPT = "a large red circle at the top left on a blue background"
NEGATIVE = "blurry"
GIB = 2**30
WARMUP_STEPS = 2  # enough to compile every kernel: the shapes do not depend on the step count
# part → (family, size, batches). SDXL at batch 1 only: its batch 4 would take the time the
# compiled runs need.
PARTS = {"sd15": ("sd1", 512, (1, 4)), "sdxl": ("sdxl", 1024, (1,))}
CAPS_GIB = {"sd15": 2, "sdxl": 4}
# Default mode: "max-autotune-no-cudagraphs" benchmarks many kernel variants for every shape,
# minutes per UNet on top of the default mode's, which the time budget cannot hold.
COMPILE_MODE = "default"
# Seconds one compiled configuration takes (two graphs: ours and diffusers' call the UNet with
# differently shaped timesteps; plus the runs): an estimate, to skip it when the budget has no room.
COMPILE_ESTIMATE_S = {"sd15": 90, "sdxl": 150}


def log(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:400] if lines else ""


# -- models -----------------------------------------------------------------------------------------
def build_model(family_name: str, device: torch.device, dtype: torch.dtype, tiny: bool) -> LoadedModel:
    """The family's real architecture from the shipped configs (random weights), or the tests' tiny
    components, as a LoadedModel like the loader hands out."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.models.configs import alphas_cumprod_from_config, scheduler_config, shipped_config_dir
    from engine.models.families import family
    from engine.models.loaders import _shared_tokenizer, finish_module
    from engine.models.types import CheckpointInfo

    folder = shipped_config_dir(family_name)
    slots = family(family_name).encoders
    if tiny:
        from tests.fakes.tiny_models import tiny_components

        parts = tiny_components(seed=0, family=family_name)
        unet, vae = parts.unet, parts.vae
        encoders = {slot.component: getattr(parts, slot.component) for slot in slots}
    else:
        with torch.device(device):  # built on the device: no detour of gigabytes through the CPU
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            encoders = {
                slot.component: (CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel)(
                    CLIPTextConfig.from_pretrained(folder / slot.component)
                )
                for slot in slots
            }
    texts: dict[str, Any] = {}
    for slot in slots:
        texts[slot.component] = finish_module(encoders[slot.component], device, dtype)
        texts[slot.component.replace("text_encoder", "tokenizer")] = _shared_tokenizer(slot.pad_token)
    return LoadedModel(
        info=CheckpointInfo(f"random-{family_name}", folder, "diffusers", 0, 0.0), short_hash="0000000000",
        family=family_name, prediction_type="epsilon", unet=finish_module(unet, device, dtype),
        vae=finish_module(vae, device, dtype), device=device, dtype=dtype, vae_dtype=dtype,
        alphas_cumprod=alphas_cumprod_from_config(scheduler_config(folder)),
        text_encoder=texts.get("text_encoder"), tokenizer=texts.get("tokenizer"),
        text_encoder_2=texts.get("text_encoder_2"), tokenizer_2=texts.get("tokenizer_2"),
    )  # fmt: skip


class Models:
    """At most one model on the device at a time: a peak reading must not count a model that is not
    running, and the memory cap counts everything this process holds."""

    def __init__(self, device: torch.device, dtype: torch.dtype, tiny: bool):
        self.device, self.dtype, self.tiny = device, dtype, tiny
        self.part: str | None = None
        self.model: LoadedModel | None = None

    def get(self, part: str) -> LoadedModel:
        if self.part != part or self.model is None:
            self.drop()
            log(f"building {part} ({'tiny' if self.tiny else 'real architecture'}, {self.dtype})")
            self.model = build_model(PARTS[part][0], self.device, self.dtype, self.tiny)
            self.part = part
        return self.model

    def drop(self) -> None:
        """Free the model (after a cap run its parts are wherever the failed plan left them)."""
        self.model = self.part = None
        release_memory(self.device)


# -- one run ----------------------------------------------------------------------------------------
def params(size: int, steps: int, batch: int) -> GenerationParams:
    return GenerationParams(
        prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, sampler_name="Euler", scheduler="Uniform",
        cfg_scale=7, seed=1, width=size, height=size, batch_size=batch,
    )  # fmt: skip


def run_ours(model: LoadedModel, size: int, steps: int, batch: int) -> None:
    txt2img(model, params(size, steps, batch), job=Job(), save=None)


def run_diffusers(pipe: Any, model: LoadedModel, size: int, steps: int, batch: int) -> None:
    f = model.vae_scale_factor
    shape = (batch, model.latent_channels, size // f, size // f)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    pipe(  # as shipped: its __call__ runs under torch.no_grad, like our txt2img
        PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7, height=size,
        width=size, num_images_per_prompt=batch, latents=latents.to(model.device, model.dtype),
        output_type="pil",
    )  # fmt: skip


def measured(run: Callable[[], None], device: torch.device) -> tuple[float, float | None]:
    """(seconds, peak GPU memory in GiB; None off CUDA) of `run`, the GPU's queue drained at both ends."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return seconds, (round(torch.cuda.max_memory_allocated(device) / GIB, 2) if cuda else None)


def reference_pipeline(model: LoadedModel) -> Any:
    return diffusers_sdxl_pipeline(model) if model.family == "sdxl" else diffusers_euler_pipeline(model)


def compare(model: LoadedModel, size: int, steps: int, batch: int, repeats: int) -> dict[str, Any]:
    """Ours against diffusers on the same components: a warm-up each, then `repeats` timed runs
    each, alternating who goes first so that neither always finds the warmer GPU."""
    pipe = reference_pipeline(model)
    runs = {
        "ours": lambda n: run_ours(model, size, n, batch),
        "diffusers": lambda n: run_diffusers(pipe, model, size, n, batch),
    }
    result: dict[str, Any] = {}
    for name, run in runs.items():
        result[f"warmup_{name}_s"] = round(measured(partial(run, WARMUP_STEPS), model.device)[0], 2)
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    peaks: dict[str, list[float | None]] = {"ours": [], "diffusers": []}
    for i in range(repeats):
        for name in ("ours", "diffusers") if i % 2 == 0 else ("diffusers", "ours"):
            seconds, peak = measured(partial(runs[name], steps), model.device)
            times[name].append(seconds)
            peaks[name].append(peak)
    for name in runs:
        seconds = sorted(times[name])[(repeats - 1) // 2]  # the median (the lower one of two)
        result[f"{name}_s"] = round(seconds, 3)
        result[f"{name}_it_s"] = round(steps / seconds, 2)
        result[f"{name}_peak_gib"] = None if peaks[name][0] is None else max(peaks[name])
    result["it_s_ratio"] = round(result["ours_it_s"] / result["diffusers_it_s"], 3)
    return result


def compiled(model: LoadedModel) -> LoadedModel:
    """The same model with its UNet under torch.compile (shared by both pipelines). Static shapes:
    each batch size gets its own graph, as a user who keeps one size would have."""
    # Every configuration adds graphs to the same UNet forward (ours passes the timestep per batch
    # row, diffusers as a scalar: two per batch size and family); past the default limit of 8,
    # dynamo would quietly run the rest eagerly.
    torch._dynamo.config.recompile_limit = 32
    unet = torch.compile(model.unet, mode=COMPILE_MODE, dynamic=False)
    return dataclasses.replace(model, unet=unet)


def compare_compiled(model: LoadedModel, size: int, steps: int, batch: int, repeats: int) -> dict[str, Any]:
    """`compare` with the UNet compiled, and how many graphs dynamo compiled for it (0 would mean
    the figures are eager ones)."""
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    result = compare(compiled(model), size, steps, batch, repeats)
    return result | {"graphs_compiled": counters["stats"]["unique_graphs"] - before}


# -- memory caps ------------------------------------------------------------------------------------
def queued(queue: JobQueue, model: LoadedModel, plan: str, size: int, steps: int) -> dict[str, Any]:
    """One txt2img job through the job queue under `plan` (placed inside the job, as the app does:
    an out-of-memory while moving the parts is the job's too): its seconds and peak, or its error."""

    def job_fn(job: Job) -> Any:
        model.residency.apply(plan, model.part_groups())
        return txt2img(model, params(size, steps, 1), job=job, save=None)

    job = Job()
    start = time.perf_counter()
    queue.submit(job, job_fn)
    job.wait()
    seconds = time.perf_counter() - start
    if job.error is not None:
        return {"failed": True, "error": type(job.error).__name__, "message": first_line(job.error),
                "atelier_out_of_memory": isinstance(job.error, OutOfMemory)}  # fmt: skip
    peak = peak_memory_gib(model.device)  # since the job started: the queue reset the reading
    peak = None if peak is None else round(peak, 2)
    return {"failed": False, "seconds": round(seconds, 2), "peak_gib": peak}


def warm_and_queue(queue: JobQueue, model: LoadedModel, plan: str, size: int, steps: int) -> dict[str, Any]:
    warm = queued(queue, model, plan, size, WARMUP_STEPS)
    return warm if warm["failed"] else queued(queue, model, plan, size, steps)


def under_cap(model: LoadedModel, cap_gib: int, size: int, steps: int) -> dict[str, Any]:
    """`model` at `size`, batch 1: without a cap (gpu-only), then under the cap with the automatic
    plan, then under the cap forced to gpu-only, which must end with our out-of-memory error."""
    cap = cap_gib * GIB
    queue = JobQueue(model.device)  # no on_out_of_memory: the forced run must not lighten later plans
    model.residency = Residency(model.device)
    uncapped = warm_and_queue(queue, model, GPU_ONLY, size, steps)
    total = torch.cuda.get_device_properties(model.device).total_memory
    torch.cuda.set_per_process_memory_fraction(cap / total, model.device)
    try:
        free = plannable_free(model)  # within the cap: free_bytes honours it
        choice = choose_plan(free, Footprint.of(model, size, size, 1))
        model.residency.apply(choice.plan, model.part_groups())
        release_memory(model.device)  # what the moved parts left in the allocator's cache
        automatic = warm_and_queue(queue, model, choice.plan, size, steps)
        forced = queued(queue, model, GPU_ONLY, size, steps)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, model.device)
    result = {"cap_gib": cap_gib, "size": size, "plan": choice.plan, "plan_text": choice.describe(),
              "planner_free_gib": round(free / GIB, 2), "automatic": automatic,
              "uncapped": uncapped, "gpu_only": forced}  # fmt: skip
    if not automatic["failed"] and not uncapped["failed"]:
        result["slowdown"] = round(automatic["seconds"] / uncapped["seconds"], 2)
    return result


# -- the run ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Item:
    """One measurement: where its result goes in the JSON, what it costs (None: always run)."""

    path: tuple[str, ...]
    run: Callable[[], dict[str, Any]]
    estimate_s: float | None = None


def plan_items(args: argparse.Namespace, models: Models, sizes: dict[str, int]) -> list[Item]:
    """The measurements `args` ask for, in the order they run: each part's eager comparisons and
    its cap run (on the same model), then the compiled configurations, batch 1 first."""
    parts = list(PARTS) if args.only in (None, "caps") else [args.only]
    steps, repeats = args.steps, args.repeats

    def comparison(part: str, batch: int, compile_unet: bool) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            measure = compare_compiled if compile_unet else compare
            return measure(models.get(part), sizes[part], steps, batch, repeats)

        return run

    def capped(part: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            try:
                return under_cap(models.get(part), CAPS_GIB[part], sizes[part], steps)
            finally:
                models.drop()  # its parts are wherever the failed gpu-only run left them

        return run

    items = []
    for part in parts:
        if args.only != "caps":
            items += [Item((part, f"batch_{b}", "eager"), comparison(part, b, False)) for b in PARTS[part][2]]
        if args.only in (None, "caps") and args.device == "cuda":
            items.append(Item(("caps", part), capped(part)))
    if args.only in (None, "caps") and args.device != "cuda":
        items.append(Item(("caps",), lambda: {"skipped": "no CUDA"}))
    for batch in (1, 4):
        for part in parts if args.only != "caps" else []:
            if batch in PARTS[part][2]:
                path = (part, f"batch_{batch}", "compiled")
                if args.no_compile:
                    items.append(Item(path, lambda: {"skipped": "--no-compile"}))
                else:
                    items.append(Item(path, comparison(part, batch, True), COMPILE_ESTIMATE_S[part]))
    return items


def store(result: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        result = result.setdefault(key, {})
    result[path[-1]] = value


def execute(item: Item, budget_end: float) -> dict[str, Any]:
    """The item's result; a failure is recorded, not raised, so that one run gives every other figure."""
    left = budget_end - time.monotonic()
    if item.estimate_s is not None and left < item.estimate_s:
        return {"skipped": f"time budget: {left:.0f} s left, about {item.estimate_s} s needed"}
    try:
        return item.run()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {first_line(exc)}"}


def headline(result: dict[str, Any]) -> dict[str, float]:
    """Every measured it/s ratio, by part, batch and mode."""
    ratios = {}
    for part in PARTS:
        for batch, modes in result.get(part, {}).items():
            for mode, figures in modes.items():
                if "it_s_ratio" in figures:
                    ratios[f"{part}_{batch}_{mode}"] = figures["it_s_ratio"]
    return ratios


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--only", choices=("sd15", "sdxl", "caps"), default=None, help="run one part")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each pipeline per configuration")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny random components at 64²")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile configurations")
    ap.add_argument("--budget", type=float, default=420, help="seconds; compiled runs start only within it")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: CUDA is not available (torch sees no GPU); pass --device cpu for a smoke run")
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # the CPU computes in fp32
    sizes = {part: 64 if args.tiny else size for part, (_family, size, _batches) in PARTS.items()}
    models = Models(device, dtype, args.tiny)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."), "steps": args.steps,
        "repeats": args.repeats, "tiny": args.tiny, "compile_mode": COMPILE_MODE,
        "sampler": "Euler, Uniform schedule, CFG 7", "sizes": sizes,
        "sdxl_batches": "batch 1 only: a batch of 4 would take the time the compiled runs need",
    }  # fmt: skip
    budget_end = START + args.budget
    for item in plan_items(args, models, sizes):
        log(f"{'/'.join(item.path)} ...")
        value = execute(item, budget_end)
        store(result, item.path, value)
        log(f"{'/'.join(item.path)}: {json.dumps(value)}")
    models.drop()
    result["headline_it_s_ratio"] = headline(result)
    result["seconds"] = round(time.monotonic() - START, 1)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
