"""The shipped canny ControlNet on the built-in model, checked as a user would: the result follows
the control map's edges far more closely than the prompt alone draws them (the IoU that
bench/controlnet.py measures), and when the prompt names one place and the map has the shape in
another, the map wins more often than not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.models.builtin import BUILTIN_NAME, builtin_paths
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams
from world import describe, render
from world.edges import edge_iou, edges_of
from world.scenes import scene_from_caption

pytestmark = pytest.mark.slow  # the built-in model and ControlNet on many prompts

CONTROLNET = builtin_paths()[0].parent / "ControlNet" / "atelier-tiny-canny.safetensors"
SCENES = [
    "a large red square at the top left on a blue background",
    "a small green star on the right on a yellow background",
    "a large orange triangle at the bottom on a white background",
    "a small yellow circle at the bottom left on a black background",
]
# (shape, its place in the control picture, the place the prompt names, background)
CONFLICTS = [
    ("a large red square", "at the top left", "at the bottom right", "blue"),
    ("a large yellow circle", "at the bottom right", "at the top left", "black"),
    ("a large green triangle", "on the left", "on the right", "white"),
    ("a large blue star", "at the top", "at the bottom", "yellow"),
]


@pytest.fixture(scope="module")
def model():
    from engine.models.manager import ModelManager

    return ModelManager(device="cpu").get(BUILTIN_NAME)


@pytest.fixture(scope="module")
def library():
    return ControlNetLibrary(CONTROLNET.parent)


def generate(model, library, prompt: str, source: np.ndarray | None, seed: int) -> np.ndarray:
    params = GenerationParams(
        prompt=prompt, steps=20, sampler_name="Euler a", seed=seed, width=128, height=128
    )
    unit = ControlNetUnit(module="canny", model=CONTROLNET.stem, pixel_perfect=True)
    control = None if source is None else [ControlInput(unit, Image.fromarray(source))]
    return np.asarray(txt2img(model, params, control=control, controlnets=library).images[0])


def control_picture(caption: str) -> np.ndarray:
    return render(scene_from_caption(caption, np.random.default_rng(3)), 128)


def test_the_builtin_canny_controlnet_ships_small():
    assert CONTROLNET.is_file() and CONTROLNET.stat().st_size <= 10 * 1024 * 1024


def test_the_result_follows_the_control_edges(model, library):
    controlled, plain = [], []
    for seed, caption in enumerate(SCENES, start=1):
        source = control_picture(caption)
        target = edges_of(source)
        with_unit = generate(model, library, caption, source, seed)
        controlled.append(edge_iou(target, edges_of(with_unit)))
        plain.append(edge_iou(target, edges_of(generate(model, library, caption, None, seed))))
        assert describe(with_unit).position == describe(source).position
    assert np.median(controlled) >= 0.7, controlled
    assert np.median(controlled) >= np.median(plain) + 0.15, (controlled, plain)


def test_the_map_wins_most_conflicts_with_the_prompt(model, library):
    """Measured when the ControlNet shipped: the map's place in 5 of these 8, the prompt's in 3."""
    wins = []
    for shape, map_place, prompt_place, background in CONFLICTS:
        source = control_picture(f"{shape} {map_place} on a {background} background")
        place = describe(source).position
        prompt = f"{shape} {prompt_place} on a {background} background"
        for seed in (1, 2):
            wins.append(describe(generate(model, library, prompt, source, seed)).position == place)
    assert sum(wins) >= 4, wins
