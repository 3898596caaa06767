"""The synthetic world the built-in model learns: one flat shape on a (mostly) flat background.

Everything is deterministic from an explicit ``numpy.random.Generator`` (never the global RNG), so a
seed reproduces a data set exactly. Geometry is expressed in a 128-px frame and scaled on render,
so the same scene can be drawn at any size.

Caption grammar (``caption`` and ``parse_caption`` are exact inverses)::

    a {small|large} {colour} {shape} {position phrase} on a {background} background

e.g. "a large red circle at the top left on a blue background", "a small white star in the center
on an orange background". The gradient flag and the jitter are nuisance variation and are not
captioned: a prompt names what the scorer can check, nothing more.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import cv2
import numpy as np

FRAME: Final = 128  # the coordinate frame scenes are defined in (pixels)

# Fixed RGB values. Chosen far apart in RGB (closest pair orange/yellow ≈ 80) so a blurred or
# slightly colour-shifted decode still lands on the right name; purple is absent because the
# probe found it too close to blue.
PALETTE: Final[dict[str, tuple[int, int, int]]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 40),
    "green": (30, 165, 60),
    "blue": (30, 70, 220),
    "pink": (250, 130, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: Final = tuple(PALETTE)
SHAPES: Final = ("circle", "square", "triangle", "star")
SIZES: Final = ("small", "large")

# Named cells of the 3×3 grid -> (column, row), and the phrase each takes in a caption.
POSITIONS: Final[dict[str, tuple[int, int]]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
POSITION_PHRASES: Final[dict[str, str]] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
# Cell centres at 1/4, 1/2, 3/4 of the frame (not the thirds' centres) so a large star at a corner,
# jitter included, stays fully inside the frame and the border pixels remain pure background.
GRID_CENTRES: Final = (32.0, 64.0, 96.0)

# Base radius per size; small and large differ by ~1.8× so size is unambiguous even after blur.
BASE_RADIUS: Final[dict[str, float]] = {"small": 12.0, "large": 22.0}
# Per-shape scale of the base radius to the circumradius, so shapes of one size look equally big
# (a square inscribed in the circle would look much smaller than the circle).
SHAPE_SCALE: Final[dict[str, float]] = {"circle": 1.0, "square": 1.2, "triangle": 1.15, "star": 1.2}
STAR_INNER_RATIO: Final = 0.45  # chunkier than the classic 0.38: arms survive a small VAE
JITTER_PX: Final = 2.5
RADIUS_JITTER: Final = 0.06
ROTATION_JITTER_DEG: Final = 6.0
GRADIENT_PROBABILITY: Final = 0.3
GRADIENT_AMPLITUDE: Final = 22.0  # per-channel swing at the frame edge: mild, never another colour
SUPERSAMPLE: Final = 4  # draw the mask at 4× and area-downsample: exact-coverage anti-aliasing


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Attributes:
    """What a caption says — exactly the attributes the scorer checks."""

    shape: str
    colour: str
    size: str
    position: str
    background: str

    def __post_init__(self) -> None:
        checks = (
            ("shape", SHAPES),
            ("colour", COLOURS),
            ("size", SIZES),
            ("position", tuple(POSITIONS)),
            ("background", COLOURS),
        )
        for field, allowed in checks:
            if getattr(self, field) not in allowed:
                raise ValueError(f"unknown {field} {getattr(self, field)!r}; expected one of {allowed}")
        if self.colour == self.background:
            raise ValueError(f"shape colour and background are both {self.colour!r}")

    @property
    def caption(self) -> str:
        return (
            f"a {self.size} {self.colour} {self.shape} {POSITION_PHRASES[self.position]}"
            f" on {_article(self.background)} {self.background} background"
        )


@dataclass(frozen=True)
class Scene(Attributes):
    """Captioned attributes plus the uncaptioned render details that make each image unique."""

    gradient: bool = False
    gradient_angle: float = 0.0  # radians; direction in which the background gets lighter
    dx: float = 0.0  # offset of the shape centre from its grid centre, in frame pixels
    dy: float = 0.0
    radius_scale: float = 1.0
    rotation: float = 0.0  # degrees

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.shape, self.colour, self.size, self.position, self.background)

    @property
    def centre(self) -> tuple[float, float]:
        col, row = POSITIONS[self.position]
        return GRID_CENTRES[col] + self.dx, GRID_CENTRES[row] + self.dy

    @property
    def radius(self) -> float:
        """Circumradius in frame pixels (what cv2.minEnclosingCircle measures)."""
        return BASE_RADIUS[self.size] * SHAPE_SCALE[self.shape] * self.radius_scale


_CAPTION_RE: Final = re.compile(
    r"a (?P<size>{}) (?P<colour>{}) (?P<shape>{}) (?P<phrase>{}) on an? (?P<background>{}) background".format(
        "|".join(SIZES),
        "|".join(COLOURS),
        "|".join(SHAPES),
        "|".join(sorted(map(re.escape, POSITION_PHRASES.values()), key=len, reverse=True)),
        "|".join(COLOURS),
    )
)
_PHRASE_TO_POSITION: Final = {phrase: name for name, phrase in POSITION_PHRASES.items()}


def parse_caption(caption: str) -> Attributes:
    """Invert ``Attributes.caption``; raises ValueError for text outside the grammar."""
    match = _CAPTION_RE.fullmatch(" ".join(caption.lower().split()).rstrip("."))
    if match is None:
        raise ValueError(f"caption outside the scene grammar: {caption!r}")
    return Attributes(
        shape=match["shape"],
        colour=match["colour"],
        size=match["size"],
        position=_PHRASE_TO_POSITION[match["phrase"]],
        background=match["background"],
    )


def _random_details(rng: np.random.Generator) -> dict[str, float | bool]:
    return {
        "gradient": bool(rng.random() < GRADIENT_PROBABILITY),
        "gradient_angle": float(rng.uniform(0.0, 2 * math.pi)),
        "dx": float(rng.uniform(-JITTER_PX, JITTER_PX)),
        "dy": float(rng.uniform(-JITTER_PX, JITTER_PX)),
        "radius_scale": float(rng.uniform(1 - RADIUS_JITTER, 1 + RADIUS_JITTER)),
        "rotation": float(rng.uniform(-ROTATION_JITTER_DEG, ROTATION_JITTER_DEG)),
    }


def random_scene(rng: np.random.Generator) -> Scene:
    """Uniform over shape, colour, size, position; background uniform over the other colours."""
    colour = COLOURS[rng.integers(len(COLOURS))]
    backgrounds = [c for c in COLOURS if c != colour]
    return Scene(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=colour,
        size=SIZES[rng.integers(len(SIZES))],
        position=tuple(POSITIONS)[rng.integers(len(POSITIONS))],
        background=backgrounds[rng.integers(len(backgrounds))],
        **_random_details(rng),  # type: ignore[arg-type]
    )


def scene_from_caption(caption: str, rng: np.random.Generator) -> Scene:
    """A ground-truth scene for ``caption`` with random (seeded) uncaptioned details."""
    a = parse_caption(caption)
    return Scene(a.shape, a.colour, a.size, a.position, a.background, **_random_details(rng))  # type: ignore[arg-type]


def shape_outline(scene: Scene) -> np.ndarray:
    """Polygon vertices (N×2, frame pixels, x right / y down) of the scene's shape."""
    cx, cy = scene.centre
    r = scene.radius
    # Triangle and star point up, square sits flat: the canonical pose, rotated by the jitter only.
    # Every shape is regular, so its centroid is its centre: position is unambiguous to the scorer.
    if scene.shape == "circle":
        angles, radii = np.linspace(0, 2 * math.pi, 96, endpoint=False), np.full(96, r)
    elif scene.shape == "square":
        angles, radii = np.deg2rad([45.0, 135.0, 225.0, 315.0]), np.full(4, r)
    elif scene.shape == "triangle":
        angles, radii = np.deg2rad([-90.0, 30.0, 150.0]), np.full(3, r)
    else:  # star: 10 vertices alternating outer and inner radius
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, r * STAR_INNER_RATIO)
    angles = angles + math.radians(scene.rotation)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


@lru_cache(maxsize=8)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates scaled to [-1, 1], cached: rendering is on the training hot path."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(coords, coords)


def _background(scene: Scene, size: int) -> np.ndarray:
    base = np.asarray(PALETTE[scene.background], dtype=np.float32)
    if not scene.gradient:
        return np.broadcast_to(base, (size, size, 3))
    xs, ys = _unit_grid(size)
    ramp = xs * math.cos(scene.gradient_angle) + ys * math.sin(scene.gradient_angle)
    return base + GRADIENT_AMPLITUDE * ramp[..., None]


def coverage(scene: Scene, size: int = FRAME) -> np.ndarray:
    """The fraction of each pixel of a ``size``×``size`` frame the shape covers (float32, 0–1)."""
    hi = size * SUPERSAMPLE
    # A continuous point p (pixel i spans [i, i+1)) maps to hi-res pixel centre p*k - 0.5;
    # 4 fractional bits of cv2's fixed-point 'shift' keep sub-pixel placement.
    points = shape_outline(scene) * (size / FRAME) * SUPERSAMPLE - 0.5
    fixed = np.round(points * 16).astype(np.int32)
    mask_hi = np.zeros((hi, hi), np.uint8)
    cv2.fillPoly(mask_hi, [fixed], 255, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(mask_hi, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def render(scene: Scene, size: int = FRAME) -> np.ndarray:
    """Draw ``scene`` as an anti-aliased ``size``×``size`` RGB uint8 image."""
    alpha = coverage(scene, size)
    colour = np.asarray(PALETTE[scene.colour], dtype=np.float32)
    image = _background(scene, size) * (1 - alpha[..., None]) + colour * alpha[..., None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def sample_dataset(seed: int, n: int, size: int = FRAME) -> Iterator[tuple[np.ndarray, str]]:
    """``n`` (image, caption) pairs, identical for identical seeds."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        scene = random_scene(rng)
        yield render(scene, size), scene.caption
