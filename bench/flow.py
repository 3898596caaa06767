"""Our txt2img on the flow-matching families against diffusers' pipelines on the same components:
SD 3 against StableDiffusion3Pipeline (CFG 5), Flux dev against FluxPipeline (CFG 1, distilled
guidance 3.5).

Both run the same transformer, VAE, text encoders and tokenizers, Euler on the same σ's (ours,
handed to diffusers' flow scheduler with shift 1), the same steps, guidance and initial noise, in
this process, interleaved so that machine noise hits both alike. Prints one JSON line with
ratio = our median time / diffusers' median time (≤ 1.0: our loop adds nothing).

    .venv/bin/python bench/flow.py [--family sd3|flux] [--steps 20] [--repeats 7]   # tiny, CPU
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

from bench.reference import diffusers_flux_pipeline, diffusers_sd3_pipeline  # noqa: E402
from engine.pipeline import stages  # noqa: E402
from engine.pipeline.txt2img import txt2img  # noqa: E402
from engine.schema.params import GenerationParams  # noqa: E402
from engine.service.jobs import Job  # noqa: E402

PROMPT = "a large red circle at the top left on a blue background"
SIZE = 64


def tiny_model(family: str):
    """The tests' tiny components of `family`, written as a diffusers folder and loaded by our loader."""
    from engine.models.loaders import load_checkpoint
    from engine.models.registry import scan_folder
    from tests.fakes.tiny_flow import write_tiny_flux, write_tiny_sd3

    folder = Path(tempfile.mkdtemp(prefix=f"atelier-bench-{family}-"))
    write = write_tiny_sd3 if family == "sd3" else write_tiny_flux
    path = write(folder / f"tiny-{family}")
    (info,) = [i for i in scan_folder(folder) if i.path == path]
    return load_checkpoint(info, "cpu", torch.float32, torch.float32)


def params(model, steps: int) -> GenerationParams:
    cfg = 5 if model.family == "sd3" else 1  # Flux runs at real CFG 1 with its distilled guidance
    return GenerationParams(
        prompt=PROMPT, negative_prompt="blurry", steps=steps, sampler_name="Euler", scheduler="Simple",
        cfg_scale=cfg, seed=1, width=SIZE, height=SIZE,
    )  # fmt: skip


def time_ours(model, steps: int) -> float:
    start = time.perf_counter()
    txt2img(model, params(model, steps), job=Job(), save=None)
    return time.perf_counter() - start


def time_diffusers(pipe, model, steps: int) -> float:
    p = params(model, steps)
    sigmas = stages.make_sigmas(model, p)[:-1].tolist()
    f = model.vae_scale_factor
    noise = torch.randn(
        (1, model.latent_channels, SIZE // f, SIZE // f), generator=torch.Generator().manual_seed(1)
    )
    if model.family == "sd3":
        kwargs = {"negative_prompt": p.negative_prompt, "guidance_scale": p.cfg_scale, "latents": noise}
    else:  # Flux takes its latents as 2×2 patches, and the distilled guidance as `guidance_scale`
        latents = pipe._pack_latents(noise, 1, model.latent_channels, SIZE // f, SIZE // f)
        kwargs = {"guidance_scale": p.distilled_cfg_scale, "latents": latents}
    start = time.perf_counter()
    with torch.inference_mode():
        pipe(
            p.prompt,
            num_inference_steps=steps,
            sigmas=sigmas,
            height=SIZE,
            width=SIZE,
            output_type="pil",
            **kwargs,
        )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=("sd3", "flux"), default="sd3")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    model = tiny_model(args.family)
    pipe = diffusers_sd3_pipeline(model) if args.family == "sd3" else diffusers_flux_pipeline(model)
    time_ours(model, 2)  # warm-up both paths
    time_diffusers(pipe, model, 2)
    ours, theirs = [], []
    for i in range(args.repeats):  # alternate who goes first: neither gets a warmer cache
        if i % 2:
            theirs.append(time_diffusers(pipe, model, args.steps))
        ours.append(time_ours(model, args.steps))
        if not i % 2:
            theirs.append(time_diffusers(pipe, model, args.steps))
    result = {
        "device": "cpu",
        "family": args.family,
        "steps": args.steps,
        "ours_s": round(statistics.median(ours), 4),
        "diffusers_s": round(statistics.median(theirs), 4),
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
