"""How well a picture follows a control edge map: IoU of the two edge sets, each widened by a
small tolerance (a 1-px outline drawn one pixel off is still the same outline)."""

from __future__ import annotations

import cv2
import numpy as np


def edges_of(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges (bool HW) of an RGB uint8 picture, with the canny preprocessor's defaults."""
    gray = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return cv2.Canny(gray, low, high) > 0


def edge_iou(a: np.ndarray, b: np.ndarray, tolerance: int = 2) -> float:
    """IoU of two bool edge maps after dilating each by `tolerance` px (1.0 for two empty maps)."""
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    wide_a = cv2.dilate(a.astype(np.uint8), kernel) > 0
    wide_b = cv2.dilate(b.astype(np.uint8), kernel) > 0
    union = np.logical_or(wide_a, wide_b).sum()
    return 1.0 if union == 0 else float(np.logical_and(wide_a, wide_b).sum() / union)
