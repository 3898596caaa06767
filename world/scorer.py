"""Automatic prompt-adherence scorer for synthetic-world images (OpenCV + numpy only).

It reads an image the way the world draws one — a single shape on a smooth background — and names
what it sees in the world's vocabulary. It judges *generated* images (e.g. a 128 px VAE decode), so
every step is chosen to survive blur, noise, JPEG and small colour shifts:

- background: a plane fitted per channel to the border pixels (outliers rejected), so the mild
  gradients are modelled rather than mistaken for foreground; named by its median border colour;
- foreground: distance from that plane, thresholded at half the shape/background contrast (the
  50 % crossing of a blurred edge is where the true edge lies), opened, largest component, holes filled;
- colour: nearest palette colour to the median of the mask's core (high-contrast) pixels;
- shape: hull solidity (a star is concave), area over the minimum enclosing triangle (≈ 0.9 only
  for a triangle) and over the minimum enclosing circle (circle ≈ 0.95, square ≈ 0.67) — ratios
  that blur shifts only slightly;
- size: minimum-enclosing-circle radius (small ≈ 11–15 px, large ≈ 21–28 px);
- position: centroid → nearest of the grid centres per axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

import cv2
import numpy as np

from world.scenes import FRAME, GRID_CENTRES, PALETTE, POSITIONS, parse_caption

ATTRIBUTES: Final = ("background", "colour", "shape", "size", "position")

_PALETTE_RGB: Final = np.array(list(PALETTE.values()), dtype=np.float32)
_PALETTE_NAMES: Final = tuple(PALETTE)
_CELL_TO_POSITION: Final = {cell: name for name, cell in POSITIONS.items()}

BORDER_PX: Final = 3
MIN_CONTRAST: Final = 35.0  # below this the "shape" is indistinguishable from background noise
MIN_AREA_FRACTION: Final = 0.003  # ≈ 50 px at 128²; a small star covers ≈ 170
# Shape thresholds sit midway between the ranges measured on renders blurred (σ up to 1.6), noised
# and JPEG-compressed: solidity star 0.59-0.81 vs convex shapes ≥ 0.90; area over the minimum
# enclosing triangle: triangle ≥ 0.72 vs circle ≤ 0.62; over the enclosing circle: circle ≥ 0.87
# vs square ≤ 0.77.
STAR_MAX_SOLIDITY: Final = 0.855
TRIANGLE_MIN_FILL: Final = 0.67
CIRCLE_MIN_FILL: Final = 0.82
# Enclosing radius splitting small from large, at 128 px: small tops out near 15.3, large starts near 20.7.
SIZE_THRESHOLD_PX: Final = 18.0


@dataclass(frozen=True)
class Observation:
    """What the scorer saw. Fields are None when no foreground shape could be found."""

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    position: str | None
    contrast: float  # foreground vs background distance (RGB units): how confident the mask is
    area_px: float  # in the image's own pixels
    radius_px: float  # minimum enclosing circle radius, rescaled to the 128-px frame
    solidity: float  # area / convex-hull area
    circle_fill: float  # area / minimum-enclosing-circle area
    triangle_fill: float  # area / minimum-enclosing-triangle area
    centroid: tuple[float, float]  # in the 128-px frame

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def nearest_colour(rgb: np.ndarray) -> str:
    distances = np.linalg.norm(_PALETTE_RGB - np.asarray(rgb, dtype=np.float32), axis=1)
    return _PALETTE_NAMES[int(np.argmin(distances))]


def _border(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Border pixels (N×3) and their (x, y) pixel-centre coordinates (N×2)."""
    h, w = image.shape[:2]
    ring = np.zeros((h, w), bool)
    ring[:BORDER_PX], ring[-BORDER_PX:], ring[:, :BORDER_PX], ring[:, -BORDER_PX:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    return image[ring].astype(np.float32), np.stack([xs, ys], axis=1).astype(np.float32) + 0.5


def _background_plane(image: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-pixel background estimate (H×W×3 float) and the background's palette name."""
    h, w = image.shape[:2]
    pixels, coords = _border(image)
    median = np.median(pixels, axis=0)
    # Robust fit: keep border pixels near the median (drops a shape touching the border), fit
    # colour = a + b·x + c·y, then refit on the pixels the first plane explains well.
    keep = np.linalg.norm(pixels - median, axis=1) < 60
    design = np.column_stack([np.ones(len(coords)), coords / max(h, w)])
    for _ in range(2):
        if keep.sum() < 12:  # border is mostly shape: fall back to a flat background
            coef = np.vstack([median, np.zeros((2, 3))])
            break
        coef, *_ = np.linalg.lstsq(design[keep], pixels[keep], rcond=None)
        residual = np.linalg.norm(design @ coef - pixels, axis=1)
        keep = residual < max(20.0, 3 * float(np.median(residual[keep])))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    plane = coef[0] + (xs[..., None] * coef[1] + ys[..., None] * coef[2]) / max(h, w)
    return plane.astype(np.float32), nearest_colour(median)


def _foreground_mask(distance: np.ndarray) -> tuple[np.ndarray, float]:
    """Largest clean blob of pixels far from the background, and the contrast it was cut at."""
    # Contrast = a high percentile of the distance; the small shapes cover ≈ 1-3 % of the image,
    # so the 99.7th percentile sits inside even a small star while ignoring isolated noise spikes.
    contrast = float(np.percentile(distance, 99.7))
    if contrast < MIN_CONTRAST:
        return np.zeros(distance.shape, np.uint8), contrast
    mask = (distance > 0.5 * contrast).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros_like(mask), contrast
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = (labels == largest).astype(np.uint8)
    # Fill holes (a noisy interior pixel must not change area or solidity).
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled, contrast


def _classify_shape(solidity: float, circle_fill: float, triangle_fill: float) -> str:
    if solidity < STAR_MAX_SOLIDITY:
        return "star"
    if triangle_fill >= TRIANGLE_MIN_FILL:
        return "triangle"
    return "circle" if circle_fill >= CIRCLE_MIN_FILL else "square"


def _grid_index(coordinate: float) -> int:
    return int(np.argmin([abs(coordinate - c) for c in GRID_CENTRES]))


def describe(image: np.ndarray) -> Observation:
    """Name the background, and the colour/shape/size/position of the dominant foreground shape."""
    image = np.asarray(image)  # also accepts a PIL image
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 16 or image.shape[1] < 16:
        raise ValueError(f"expected an H×W×3 RGB image of at least 16×16, got shape {image.shape}")
    if image.dtype != np.uint8:  # a float image in [0, 1] would silently read as "no contrast"
        raise ValueError(f"expected uint8 RGB values 0-255, got dtype {image.dtype}")
    h, w = image.shape[:2]
    scale = FRAME / max(h, w)  # geometry is judged in the world's 128-px frame
    # A light blur first: decoded images carry per-pixel noise that would otherwise fray the mask.
    smooth = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7)
    plane, background = _background_plane(smooth)
    distance = np.linalg.norm(smooth - plane, axis=2)
    mask, contrast = _foreground_mask(distance)
    area = float(mask.sum())
    empty = Observation(background, None, None, None, None, contrast, area, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0))
    if area < MIN_AREA_FRACTION * h * w:
        return empty

    contour = max(cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=cv2.contourArea)
    # All shape ratios use the contour polygon (through boundary pixel centres) for both numerator
    # and denominator, so the half-pixel inset cancels and small shapes read like large ones.
    hull = cv2.convexHull(contour)
    poly_area = max(float(cv2.contourArea(contour)), 1.0)
    (_, _), radius = cv2.minEnclosingCircle(contour)
    triangle_area, _ = cv2.minEnclosingTriangle(hull.astype(np.float32))
    solidity = poly_area / max(float(cv2.contourArea(hull)), 1.0)
    circle_fill = poly_area / max(np.pi * radius**2, 1.0)
    triangle_fill = poly_area / max(float(triangle_area), 1.0)

    # Colour from the core: pixels well above the cut, so anti-aliased edges do not pull it off.
    core = (mask > 0) & (distance > 0.75 * contrast)
    colour = nearest_colour(np.median(image[core if core.sum() >= 5 else mask > 0], axis=0))
    moments = cv2.moments(mask, binaryImage=True)
    cx, cy = (moments["m10"] / moments["m00"] + 0.5) * scale, (moments["m01"] / moments["m00"] + 0.5) * scale
    radius_frame = (radius + 0.5) * scale  # + ½ px: the contour runs half a pixel inside the edge
    return Observation(
        background=background,
        colour=colour,
        shape=_classify_shape(solidity, circle_fill, triangle_fill),
        size="large" if radius_frame >= SIZE_THRESHOLD_PX else "small",
        position=_CELL_TO_POSITION[(_grid_index(cx), _grid_index(cy))],
        contrast=contrast,
        area_px=area,
        radius_px=radius_frame,
        solidity=solidity,
        circle_fill=float(circle_fill),
        triangle_fill=triangle_fill,
        centroid=(cx, cy),
    )


def score_image(image: np.ndarray, caption: str) -> dict[str, bool]:
    """Per-attribute adherence of ``image`` to ``caption`` (a caption in the world's grammar)."""
    expected = asdict(parse_caption(caption))
    seen = describe(image)
    return {name: getattr(seen, name) == expected[name] for name in ATTRIBUTES}
