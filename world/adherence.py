"""Prompt adherence of a model: generate pictures for captions with the app's own txt2img and grade
each with the scorer. Shared by ``bench/adherence.py``, the tests and the training-time evaluation,
so all three measure the same thing the same way (Euler a, 20 steps, CFG 7, one seed per caption)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from world.scenes import random_scene
from world.scorer import ATTRIBUTES, score_image

BENCH_SAMPLER = "Euler a"
BENCH_STEPS = 20
BENCH_CFG = 7.0
# The built-in model's bars (its issue), per attribute, at N = 200: what "draws the prompt" means
# when a sampler is judged, too. Size has none there; it is reported, not judged.
BARS = {"background": 0.95, "colour": 0.85, "shape": 0.70, "position": 0.70}


# The step count each sampler is judged at (its "usual step count"). DPM fast spends a fixed budget of
# model calls (k-diffusion's `n`), not steps: at 20 that is about 7 third-order steps, while DPM2 or
# Heun at 20 steps call the model 39 times. At 30 calls it still costs less than they do.
SAMPLER_USUAL_STEPS = {"DPM fast": 30}


def usual_steps(sampler: str) -> int:
    return SAMPLER_USUAL_STEPS.get(sampler, BENCH_STEPS)


def preferred_overrides(model) -> dict:
    """The sampler settings a job on `model` runs with when Settings are untouched: what its checkpoint
    prefers (`engine.models.preferences`; the built-in model: NGMS 3 on every step), as the engine
    applies them. Pass as `overrides` to judge a sampler the way a fresh install runs it."""
    from engine.models.preferences import read_preferences

    return read_preferences(model.info.path)


def meets_bars(fractions: dict[str, float]) -> bool:
    return all(fractions[attribute] >= bar for attribute, bar in BARS.items())


def random_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 31337])
    return [random_scene(rng).caption for _ in range(n)]


@dataclass
class AdherenceReport:
    captions: list[str]
    images: list[np.ndarray] = field(default_factory=list)
    scores: list[dict[str, bool]] = field(default_factory=list)

    def fractions(self) -> dict[str, float]:
        n = max(1, len(self.scores))
        return {a: sum(s[a] for s in self.scores) / n for a in ATTRIBUTES}


def generate_and_score(
    model,
    captions: list[str],
    first_seed: int = 1000,
    size: int = 128,
    sampler: str = BENCH_SAMPLER,
    steps: int = BENCH_STEPS,
    cfg_scale: float = BENCH_CFG,
    scheduler: str = "Automatic",
    overrides: dict | None = None,
) -> AdherenceReport:
    """`model` is a loaded model (engine.models.types.LoadedModel); caption i uses seed first_seed+i.
    The sampler (with its default schedule type unless `scheduler` names one), step count and CFG
    default to the benchmark's; `overrides` sets further GenerationParams fields (sampler parameters)."""
    from engine.pipeline.txt2img import txt2img
    from engine.schema.params import GenerationParams

    report = AdherenceReport(captions)
    for i, caption in enumerate(captions):
        params = GenerationParams(
            prompt=caption,
            steps=steps,
            sampler_name=sampler,
            scheduler=scheduler,
            cfg_scale=cfg_scale,
            seed=first_seed + i,
            width=size,
            height=size,
            **(overrides or {}),
        )
        image = np.asarray(txt2img(model, params).images[0].convert("RGB"))
        report.images.append(image)
        report.scores.append(score_image(image, caption))
    return report


def vae_roundtrip_scores(vae, n: int, seed: int) -> dict[str, float]:
    """Fraction of attributes the scorer still reads after encode → decode of `n` rendered scenes:
    the ceiling the VAE puts on every model trained on its latents."""
    import torch

    from world.scenes import render

    rng = np.random.default_rng([seed, 2718])
    scenes = [random_scene(rng) for _ in range(n)]
    hits = {a: 0 for a in ATTRIBUTES}
    param = next(vae.parameters())
    for i in range(0, n, 16):
        chunk = scenes[i : i + 16]
        images = torch.from_numpy(np.stack([render(s) for s in chunk])).permute(0, 3, 1, 2)
        images = (images.float() / 127.5 - 1).to(param.device, param.dtype)
        with torch.no_grad():
            recon = vae.decode(vae.encode(images).latent_dist.mean).sample.float()
        recon = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for image, scene in zip(recon, chunk, strict=True):
            for attribute, ok in score_image(image, scene.caption).items():
                hits[attribute] += int(ok)
    return {a: hits[a] / n for a in ATTRIBUTES}
