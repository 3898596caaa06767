"""ControlNet on the built-in model: does the result follow the control edges, and what does a unit
cost per step?

- iou_with / iou_without: median edge IoU (world.edges, 2 px tolerance) between the canny map of a
  rendered scene and the canny edges of the generated picture, for N scene captions, with the
  built-in canny ControlNet (pixel perfect, weight 1) and without it. iou_with_no_position /
  iou_without_no_position: the same scenes with the caption's position phrase left out, so only the
  map says where the shape goes (the built-in model never saw such prompts: it often gets their
  background wrong). Need the ControlNet (models/builtin/ControlNet/, or --controlnet FILE);
  without one they are null.
- step_ratio_1unit / step_ratio_2units: seconds per sampling step with one and with two units over
  seconds per step without ControlNet, same job, measured alternately in this process (median of
  --repeats runs; a step's time is the difference between a 20- and a 10-step job over 10, so
  fixed costs such as preprocessing cancel). Timing needs no trained weights: without the built-in
  ControlNet a seeded random one of the same shape is timed.

Euler a, 20 steps, CFG 7, 128×128. Ends with one JSON line
{"iou_with": …, "iou_without": …, "step_ratio_1unit": …, "step_ratio_2units": …,
 "iou_with_no_position": …, "iou_without_no_position": …}.

    .venv/bin/python bench/controlnet.py [--n 50] [--repeats 5] [--controlnet FILE]
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

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

STEPS = 20


def subject_prompt(scene) -> str:
    """The scene's caption without its position phrase: what to draw, not where."""
    from world.scenes import POSITION_PHRASES

    return scene.caption.replace(" " + POSITION_PHRASES[scene.position], "", 1)


def controlnet_folder(explicit: Path | None, model, scratch: Path) -> tuple[Path, str, bool]:
    """(folder, model name, trained?) for the ControlNet to use."""
    if explicit is not None:
        return explicit.parent, explicit.stem, True
    builtin = ROOT / "models" / "builtin" / "ControlNet" / "atelier-tiny-canny.safetensors"
    if builtin.is_file():
        return builtin.parent, builtin.stem, True
    import torch

    from training.controlnet_stage import make_controlnet

    torch.manual_seed(0)
    controlnet = make_controlnet(model.unet)
    with torch.no_grad():  # non-zero output convolutions: the same work as a trained one
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            block.weight.normal_(0, 0.02)
    controlnet.save_pretrained(scratch / "random-canny")
    return scratch, "random-canny", False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--controlnet", type=Path, default=None, help="a canny ControlNet file to test")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from engine.controlnet.models import ControlNetLibrary
    from engine.controlnet.units import ControlInput, ControlNetUnit
    from engine.models.builtin import BUILTIN_NAME
    from engine.models.manager import ModelManager
    from engine.pipeline.txt2img import txt2img
    from engine.schema.params import GenerationParams
    from world import random_scene, render
    from world.edges import edge_iou, edges_of

    model = ModelManager(root=ROOT, device=args.device).get(BUILTIN_NAME)
    size = model.native_size
    with tempfile.TemporaryDirectory() as scratch:
        folder, name, trained = controlnet_folder(args.controlnet, model, Path(scratch))
        library = ControlNetLibrary(folder)
        rng = np.random.default_rng([args.seed, 5])

        def job(scene, seed: int, units: int, steps: int = STEPS, prompt: str | None = None):
            params = GenerationParams(
                prompt=prompt or scene.caption,
                steps=steps,
                sampler_name="Euler a",
                seed=seed,
                width=size,
                height=size,
            )
            source = Image.fromarray(render(scene, size))
            unit = ControlNetUnit(module="canny", model=name, pixel_perfect=True)
            control = [ControlInput(unit, source)] * units
            return source, txt2img(model, params, control=control or None, controlnets=library)

        timing: dict[int, list[float]] = {0: [], 1: [], 2: []}
        scene = random_scene(rng)
        job(scene, 0, 1)  # warm-up: loads the ControlNet and imports the preprocessor
        for r in range(args.repeats):
            for units in (0, 1, 2) if r % 2 == 0 else (2, 1, 0):
                # Per step = (time at STEPS − time at STEPS/2) / (STEPS/2): the fixed costs (prompt,
                # preprocessing, VAE) cancel, leaving the sampling loop's.
                elapsed = {}
                for steps in (STEPS, STEPS // 2):
                    start = time.perf_counter()
                    job(scene, r, units, steps)
                    elapsed[steps] = time.perf_counter() - start
                timing[units].append((elapsed[STEPS] - elapsed[STEPS // 2]) / (STEPS - STEPS // 2))
        per_step = {k: statistics.median(v) for k, v in timing.items()}

        iou: dict[str, float | None] = dict.fromkeys(
            ("iou_with", "iou_without", "iou_with_no_position", "iou_without_no_position")
        )
        if trained:
            scores: dict[str, list[float]] = {k: [] for k in iou}
            for i in range(args.n):
                scene = random_scene(rng)
                target = edges_of(np.asarray(render(scene, size)))
                for suffix, prompt in (("", scene.caption), ("_no_position", subject_prompt(scene))):
                    for key, units in (("iou_with", 1), ("iou_without", 0)):
                        picture = job(scene, args.seed + i, units, prompt=prompt)[1].images[0]
                        scores[key + suffix].append(edge_iou(target, edges_of(np.asarray(picture))))
            iou = {k: float(np.median(v)) for k, v in scores.items()}

    print(
        f"s/step: none {per_step[0]:.4f}, 1 unit {per_step[1]:.4f}, 2 units {per_step[2]:.4f}"
        + ("" if trained else " (untrained ControlNet: IoU not measured)"),
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "iou_with": iou["iou_with"],
                "iou_without": iou["iou_without"],
                "step_ratio_1unit": round(per_step[1] / per_step[0], 3),
                "step_ratio_2units": round(per_step[2] / per_step[0], 3),
                "iou_with_no_position": iou["iou_with_no_position"],
                "iou_without_no_position": iou["iou_without_no_position"],
            }
        )
    )


if __name__ == "__main__":
    main()
