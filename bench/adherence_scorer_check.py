"""How well does the adherence scorer read ground-truth renders, clean and degraded; how fast is the world?

Prints one JSON object: per-degradation accuracy per attribute, and render / describe throughput
as ratios against a baseline measured in the same run (PNG-encoding the same images), so numbers
from different machines compare.

    .venv/bin/python bench/adherence_scorer_check.py [--n 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from world.scenes import random_scene, render  # noqa: E402
from world.scorer import ATTRIBUTES, score_image  # noqa: E402

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)


DEGRADATIONS: dict[str, Degrade] = {
    "clean": lambda im, rng: im,
    "blur1": lambda im, rng: _quantise(_blur(im, 1.0)),
    "noise8": lambda im, rng: _quantise(im + rng.normal(0, 8, im.shape)),
    "blur1+noise8": lambda im, rng: _quantise(_blur(im, 1.0) + rng.normal(0, 8, im.shape)),
    "jpeg60": lambda im, rng: _jpeg(im, 60),
    # Harsher than a decent VAE decode: where the scorer's limits are.
    "blur2": lambda im, rng: _quantise(_blur(im, 2.0)),
    "noise16": lambda im, rng: _quantise(im + rng.normal(0, 16, im.shape)),
    "jpeg30": lambda im, rng: _jpeg(im, 30),
    "down64-up128": lambda im, rng: cv2.resize(
        cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA), (128, 128), interpolation=cv2.INTER_CUBIC
    ),
    "desaturate+dim": lambda im, rng: _quantise((0.75 * im + 0.25 * im.mean(2, keepdims=True)) * 0.9 + 10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    scenes = [random_scene(rng) for _ in range(args.n)]
    start = time.perf_counter()
    images = [render(scene) for scene in scenes]
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    for image in images:
        cv2.imencode(".png", image)
    png_s = time.perf_counter() - start

    accuracy: dict[str, dict[str, float]] = {}
    describe_s = 0.0
    for name, degrade in DEGRADATIONS.items():
        hits = dict.fromkeys(ATTRIBUTES, 0)
        for scene, image in zip(scenes, images, strict=True):
            degraded = degrade(image, rng)
            start = time.perf_counter()
            result = score_image(degraded, scene.caption)
            describe_s += time.perf_counter() - start
            for attribute, ok in result.items():
                hits[attribute] += ok
        accuracy[name] = {attribute: round(count / args.n, 4) for attribute, count in hits.items()}
    describe_s /= len(DEGRADATIONS)

    print(
        json.dumps(
            {
                "n": args.n,
                "seed": args.seed,
                "accuracy": accuracy,
                "render_images_per_s": round(args.n / render_s, 1),
                "score_images_per_s": round(args.n / describe_s, 1),
                "baseline_png_encode_images_per_s": round(args.n / png_s, 1),
                "render_time_vs_png_encode": round(render_s / png_s, 3),
                "score_time_vs_png_encode": round(describe_s / png_s, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
