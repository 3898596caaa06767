"""The synthetic world the built-in model is trained on, and the scorer that judges adherence to it.

``world.scenes`` draws captioned scenes deterministically from a seed; ``world.scorer`` reads an
image back into the same vocabulary so tests and benchmarks can grade generated pictures.
"""

from world.scenes import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Attributes,
    Scene,
    parse_caption,
    random_scene,
    render,
    sample_dataset,
    scene_from_caption,
)
from world.scorer import ATTRIBUTES, Observation, describe, score_image

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Attributes",
    "Observation",
    "Scene",
    "describe",
    "parse_caption",
    "random_scene",
    "render",
    "sample_dataset",
    "scene_from_caption",
    "score_image",
]
