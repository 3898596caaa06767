"""Our txt2img against diffusers' StableDiffusionPipeline on the same components.

Both run the same UNet, VAE, text encoder and tokenizer (the built-in model), the same Euler
sampler on the same σ schedule, the same steps, CFG and noise, in this process, interleaved so
that machine noise hits both alike. Prints one JSON line: {"ratio_128": …, "ratio_512": …} where
ratio = our median time / diffusers' median time (≤ 1.0 means we add no overhead).

    .venv/bin/python bench/overhead.py [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.reference import diffusers_euler_pipeline  # noqa: E402
from engine.models.manager import ModelManager  # noqa: E402
from engine.pipeline.txt2img import txt2img  # noqa: E402
from engine.schema.params import GenerationParams  # noqa: E402
from engine.service.jobs import Job  # noqa: E402

PROMPT = "a large red circle at the top left on a blue background"


def time_ours(model, size: int, steps: int) -> float:
    params = GenerationParams(
        prompt=PROMPT,
        steps=steps,
        sampler_name="Euler",
        scheduler="Uniform",
        cfg_scale=7,
        seed=1,
        width=size,
        height=size,
    )
    start = time.perf_counter()
    txt2img(model, params, job=Job(), save=None)
    return time.perf_counter() - start


def time_diffusers(pipe, model, size: int, steps: int) -> float:
    f = model.vae_scale_factor
    latents = torch.randn(
        (1, model.latent_channels, size // f, size // f), generator=torch.Generator().manual_seed(1)
    )
    start = time.perf_counter()
    with torch.inference_mode():
        pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=7,
            height=size,
            width=size,
            latents=latents.to(model.device, model.dtype),
            output_type="pil",
        )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    manager = ModelManager(
        root=ROOT,
        extra_dirs=[],
        cache_dir=ROOT / "cache",
        device=args.device,
        precision="auto",
        no_half_vae=False,
    )
    model = manager.get(manager.builtin_title())
    pipe = diffusers_euler_pipeline(model)
    result: dict[str, float | str] = {"device": str(model.device), "steps": args.steps}
    for size in (128, 512):
        time_ours(model, size, 2)  # warm-up both paths (allocator, kernels)
        time_diffusers(pipe, model, size, 2)
        ours, theirs = [], []
        for i in range(args.repeats):  # alternate who goes first: neither gets a warmer cache
            if i % 2:
                theirs.append(time_diffusers(pipe, model, size, args.steps))
            ours.append(time_ours(model, size, args.steps))
            if not i % 2:
                theirs.append(time_diffusers(pipe, model, size, args.steps))
        result[f"ours_{size}_s"] = round(statistics.median(ours), 3)
        result[f"diffusers_{size}_s"] = round(statistics.median(theirs), 3)
        result[f"ratio_{size}"] = round(statistics.median(ours) / statistics.median(theirs), 3)
        print(
            f"{size}²: ours {result[f'ours_{size}_s']} s, diffusers {result[f'diffusers_{size}_s']} s",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
