"""Control-map preprocessors, under A1111's names ("canny", "softedge_hed", ...).

The ones that need no weights always work: none, invert, canny, shuffle, tile_resample,
lineart_standard. The others run a network whose weights must be in the local annotators folder
(`models/ControlNet/annotators/`, or the folder given); without them they are listed as unavailable,
with the file names to put there. controlnet_aux does the work (imported lazily: it costs seconds);
tile_resample and invert are plain resizing / inversion, as in A1111.

A detector is built once per (preprocessor, weights folder, device) and kept (`ANNOTATORS`): a
network's weights would otherwise be read from disk for every map, twice a job with hires fix.
`free_annotators()` lets them go.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Threshold:
    label: str
    default: float
    minimum: float
    maximum: float
    step: float = 1.0


@dataclass(frozen=True)
class Preprocessor:
    name: str
    weights: tuple[str, ...] = ()  # files the annotators folder must hold
    threshold_a: Threshold | None = None
    threshold_b: Threshold | None = None
    detector: str | None = None  # controlnet_aux class name
    options: dict[str, Any] = field(default_factory=dict)


PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor("none"),
        Preprocessor("invert (from white bg & black line)"),
        Preprocessor(
            "canny",
            threshold_a=Threshold("Low Threshold", 100, 1, 255),
            threshold_b=Threshold("High Threshold", 200, 1, 255),
            detector="CannyDetector",
        ),
        Preprocessor("shuffle", detector="ContentShuffleDetector"),
        Preprocessor("tile_resample", threshold_a=Threshold("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
        Preprocessor("lineart_standard (from white bg & black line)", detector="LineartStandardDetector"),
        Preprocessor("softedge_hed", weights=("ControlNetHED.pth",), detector="HEDdetector"),
        Preprocessor("depth_midas", weights=("dpt_hybrid-midas-501f0c75.pt",), detector="MidasDetector"),
        Preprocessor(
            "openpose",
            weights=("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
            detector="OpenposeDetector",
        ),
        Preprocessor(
            "mlsd",
            weights=("mlsd_large_512_fp32.pth",),
            threshold_a=Threshold("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
            threshold_b=Threshold("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01),
            detector="MLSDdetector",
        ),
        Preprocessor(
            "lineart_realistic", weights=("sk_model.pth", "sk_model2.pth"), detector="LineartDetector"
        ),
        Preprocessor("normal_bae", weights=("scannet.pt",), detector="NormalBaeDetector"),
    )
}


# The sd-webui-controlnet extension's internal module names, which its API clients also send.
ALIASES = {
    "invert": "invert (from white bg & black line)",
    "lineart_standard": "lineart_standard (from white bg & black line)",
    "hed": "softedge_hed",
    "depth": "depth_midas",
    "lineart": "lineart_realistic",
}


def canonical_name(name: str) -> str | None:
    """The preprocessor a client means by `name` (its name in any case, or an extension alias)."""
    lowered = name.strip().lower()
    for known in PREPROCESSORS:
        if known.lower() == lowered:
            return known
    return ALIASES.get(lowered)


def availability(name: str, annotators: Path | None) -> str | None:
    """None when `name` can run; otherwise the reason it cannot, saying what to do."""
    spec = PREPROCESSORS.get(name)
    if spec is None:
        return f"unknown preprocessor {name!r}"
    missing = [w for w in spec.weights if annotators is None or not (annotators / w).is_file()]
    if missing:
        where = annotators if annotators is not None else "models/ControlNet/annotators"
        return f"{name} needs its weights: put {', '.join(missing)} in {where}"
    return None


def thresholds(name: str, a: float | None, b: float | None) -> tuple[float | None, float | None]:
    """The thresholds a run uses: the given ones, or the preprocessor's defaults."""
    spec = PREPROCESSORS[name]
    return (
        (a if a is not None else spec.threshold_a.default) if spec.threshold_a else None,
        (b if b is not None else spec.threshold_b.default) if spec.threshold_b else None,
    )


def _detector(spec: Preprocessor, annotators: Path | None) -> Any:
    import controlnet_aux  # lazily: importing it takes seconds

    cls = getattr(controlnet_aux, spec.detector)
    if spec.weights:
        # from_pretrained reads the files from a local folder and never reaches a hub then.
        return cls.from_pretrained(str(annotators), filename=spec.weights[0]) if len(spec.weights) == 1 \
            else cls.from_pretrained(str(annotators))  # fmt: skip
    return cls()


class AnnotatorCache:
    """Built detectors by (preprocessor, weights folder, device). controlnet_aux builds them on the
    CPU; one asked for on another device is moved there once, when built."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str | None, str], Any] = {}
        # Held while building too, so two threads (a job and a preview) never load the same weights.
        self._lock = threading.Lock()

    def get(self, spec: Preprocessor, annotators: Path | None, device: torch.device) -> Any:
        key = (spec.name, None if annotators is None else str(annotators), str(device))
        with self._lock:
            if key not in self._built:
                self._built[key] = _on_device(_detector(spec, annotators), device)
            return self._built[key]

    def clear(self) -> None:
        with self._lock:
            self._built.clear()

    def __len__(self) -> int:
        return len(self._built)


def _on_device(detector: Any, device: torch.device) -> Any:
    """`detector` moved to `device` (controlnet_aux builds it on the CPU). The weightless ones
    (canny, shuffle, ...) have no `to`: they run on the CPU wherever asked."""
    if device.type != "cpu" and hasattr(detector, "to"):
        detector.to(device)
    return detector


ANNOTATORS = AnnotatorCache()


def free_annotators() -> None:
    """Let every kept detector go (its weights are read again on next use)."""
    ANNOTATORS.clear()


def run(name: str, image: Image.Image, resolution: int, a: float | None = None, b: float | None = None,
        annotators: Path | None = None, device: torch.device | str | None = None) -> Image.Image:  # fmt: skip
    """The control map of `image` (RGB, about `resolution` px on its short side). `device`: where
    a network detector runs; None is the CPU, where it takes no memory from the checkpoint."""
    reason = availability(name, annotators)
    if reason is not None:
        raise ValueError(reason)
    spec = PREPROCESSORS[name]
    a, b = thresholds(name, a, b)
    image = image.convert("RGB")
    if name == "none":
        return image
    if name.startswith("invert"):
        return ImageOps.invert(image)
    if name == "tile_resample":  # a blurrier copy: the model re-adds detail at the output size
        rate = max(1.0, float(a))
        small = (max(1, round(image.width / rate)), max(1, round(image.height / rate)))
        return image.resize(small, Image.Resampling.BICUBIC)
    detector = ANNOTATORS.get(spec, annotators, torch.device(device or "cpu"))
    kwargs: dict[str, Any] = {"detect_resolution": resolution, "output_type": "pil"}
    if name == "canny":
        kwargs.update(low_threshold=int(a), high_threshold=int(b), image_resolution=resolution)
    elif name == "mlsd":
        kwargs.update(thr_v=float(a), thr_d=float(b), image_resolution=resolution)
    elif name != "lineart_standard (from white bg & black line)":
        kwargs["image_resolution"] = resolution
    out = detector(np.asarray(image), **kwargs)
    return (
        out.convert("RGB")
        if isinstance(out, Image.Image)
        else Image.fromarray(np.asarray(out)).convert("RGB")
    )


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, resize_mode: str) -> int:
    """A1111's "Pixel Perfect": the preprocessor resolution at which the map lands 1:1 on the output
    (the short side of the picture as scaled by the unit's resize mode)."""
    k_h, k_w = height / image.height, width / image.width
    k = min(k_h, k_w) if resize_mode == "Resize and Fill" else max(k_h, k_w)
    return int(round(k * min(image.width, image.height)))
