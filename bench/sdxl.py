"""Our SDXL txt2img against diffusers' StableDiffusionXLPipeline on the same components.

Both run the same UNet, VAE, both text encoders and tokenizers, Euler on the same σ schedule
("Uniform" = diffusers' linspace spacing), the same steps, CFG and noise, in this process,
interleaved so that machine noise hits both alike. Prints one JSON line with
ratio = our median time / diffusers' median time (≤ 1.0: our loop adds nothing).

    .venv/bin/python bench/sdxl.py                      # tiny random SDXL components, 64², CPU
    .venv/bin/python bench/sdxl.py --real-size --device cuda   # SDXL's real architecture, random
        weights, 1024², fp16, batch 1: it/s and peak GPU memory of both, one run each
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.reference import diffusers_sdxl_pipeline  # noqa: E402
from engine.pipeline.txt2img import txt2img  # noqa: E402
from engine.schema.params import GenerationParams  # noqa: E402
from engine.service.jobs import Job  # noqa: E402

PROMPT = "a large red circle at the top left on a blue background"


def tiny_model(device: str, dtype: torch.dtype):
    """The tests' tiny SDXL components, written as a single file and loaded by our own loader."""
    from engine.models.loaders import load_checkpoint
    from engine.models.registry import scan_folder
    from tests.fakes.tiny_models import tiny_components, write_single_file

    folder = Path(tempfile.mkdtemp(prefix="atelier-bench-sdxl-"))
    path = write_single_file(tiny_components(seed=0, family="sdxl"), folder / "tiny-xl.safetensors")
    (info,) = [i for i in scan_folder(folder) if i.path == path]
    return load_checkpoint(info, device, dtype, dtype)


def real_size_model(device: str, dtype: torch.dtype):
    """SDXL's real architecture (the shipped configs) with random weights: the speed and memory
    of a real checkpoint without one."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.models.configs import alphas_cumprod_from_config, scheduler_config, shipped_config_dir
    from engine.models.loaders import _shared_tokenizer, finish_module
    from engine.models.types import CheckpointInfo, LoadedModel

    folder = shipped_config_dir("sdxl")
    dev = torch.device(device)
    with torch.device(dev):  # build on the device: no 10 GB detour through the CPU
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        clip_l = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    info = CheckpointInfo("random-sdxl", folder, "diffusers", 0, 0.0)
    return LoadedModel(
        info=info, short_hash="0000000000", family="sdxl", prediction_type="epsilon",
        unet=finish_module(unet, dev, dtype), vae=finish_module(vae, dev, dtype),
        text_encoder=finish_module(clip_l, dev, dtype), tokenizer=_shared_tokenizer("<|endoftext|>"),
        alphas_cumprod=alphas_cumprod_from_config(scheduler_config(folder)), device=dev, dtype=dtype,
        vae_dtype=dtype, text_encoder_2=finish_module(clip_g, dev, dtype), tokenizer_2=_shared_tokenizer("!"),
    )  # fmt: skip


def params(size: int, steps: int) -> GenerationParams:
    return GenerationParams(
        prompt=PROMPT, negative_prompt="blurry", steps=steps, sampler_name="Euler", scheduler="Uniform",
        cfg_scale=7, seed=1, width=size, height=size,
    )  # fmt: skip


def sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(model, size: int, steps: int) -> float:
    sync(model)
    start = time.perf_counter()
    txt2img(model, params(size, steps), job=Job(), save=None)
    sync(model)
    return time.perf_counter() - start


def time_diffusers(pipe, model, size: int, steps: int) -> float:
    latents = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(1))
    sync(model)
    start = time.perf_counter()
    pipe(  # as shipped: its __call__ runs under torch.no_grad, like our txt2img
        PROMPT, negative_prompt="blurry", num_inference_steps=steps, guidance_scale=7, height=size,
        width=size, latents=latents.to(model.device, model.dtype), output_type="pil",
    )  # fmt: skip
    sync(model)
    return time.perf_counter() - start


def peak_gib(run) -> tuple[float, float | None]:
    """(seconds, peak GPU memory in GiB during `run`, None off the GPU)."""
    if not torch.cuda.is_available():
        return run(), None
    torch.cuda.reset_peak_memory_stats()
    seconds = run()
    return seconds, round(torch.cuda.max_memory_allocated() / 2**30, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--real-size", action="store_true")
    ap.add_argument("--size", type=int, default=None, help="picture size (default 1024 real-size, 64 tiny)")
    args = ap.parse_args()

    # fp16 where it is fast (a GPU); the CPU computes in fp32
    dtype = torch.float16 if args.real_size and args.device != "cpu" else torch.float32
    model = (real_size_model if args.real_size else tiny_model)(args.device, dtype)
    pipe = diffusers_sdxl_pipeline(model)
    size = args.size or (1024 if args.real_size else 64)
    repeats = 1 if args.real_size else args.repeats
    time_ours(model, size, 2)  # warm-up both paths (allocator, kernels)
    time_diffusers(pipe, model, size, 2)
    ours, theirs, peaks = [], [], {}
    for i in range(repeats):  # alternate who goes first: neither gets a warmer cache
        if i % 2:
            theirs.append(peak_gib(lambda: time_diffusers(pipe, model, size, args.steps)))
        ours.append(peak_gib(lambda: time_ours(model, size, args.steps)))
        if not i % 2:
            theirs.append(peak_gib(lambda: time_diffusers(pipe, model, size, args.steps)))
    ours_s = statistics.median(t for t, _ in ours)
    theirs_s = statistics.median(t for t, _ in theirs)
    result = {
        "device": torch.cuda.get_device_name() if model.device.type == "cuda" else str(model.device),
        "size": size, "steps": args.steps, "dtype": str(dtype).removeprefix("torch."),
        "ours_s": round(ours_s, 3), "diffusers_s": round(theirs_s, 3), "ratio": round(ours_s / theirs_s, 3),
        "ours_it_s": round(args.steps / ours_s, 2), "diffusers_it_s": round(args.steps / theirs_s, 2),
    }  # fmt: skip
    peaks = {"ours_peak_gib": ours[-1][1], "diffusers_peak_gib": theirs[-1][1]}
    if peaks["ours_peak_gib"] is not None:
        result.update(peaks)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
