"""Routes A1111 clients probe to learn what the server can do: `/sdapi/v1/extensions` (every
extension, built-in and the user's) and the ControlNet extension's own `/controlnet/*` routes
(version, model_list, module_list, settings, detect), answered in that extension's shapes from
Atelier's ControlNet models and preprocessors.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException

from api.errors import JSONErrorRoute, validation_error
from api.images import decode_image, encode_image
from api.models import ControlNetDetectRequest, ControlNetDetectResponse
from engine.controlnet.preprocessors import PREPROCESSORS, availability, canonical_name
from engine.controlnet.units import DEFAULT_UNITS, ControlNetUnit
from engine.schema.params import field_limits
from engine.service.memory import OutOfMemory

# The ControlNet extension's API version that clients check (its `external_code.get_api_version`).
CONTROLNET_API_VERSION = 2
RESOLUTION_LABEL = "Preprocessor Resolution"
_GIT_TIMEOUT_S = 5


# -- /sdapi/v1/extensions -------------------------------------------------------------------------
def _git(folder: Path, *args: str) -> str:
    """One line of git output about `folder`'s own checkout; "" when it is none or git fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def extension_item(record: Any, builtin_root: Path) -> dict[str, Any]:
    """A1111's ExtensionItem for one extension folder, plus what Atelier knows besides (builtin,
    description, status, error). Git facts come only from the folder's own checkout: a built-in
    extension lives in Atelier's repository, whose history is not the extension's."""
    own_checkout = (record.folder / ".git").exists()
    commit = _git(record.folder, "log", "-1", "--format=%H %ct") if own_checkout else ""
    commit_hash, _, commit_date = commit.partition(" ")
    manifest = record.manifest
    return {
        "name": record.name,
        "remote": _git(record.folder, "config", "--get", "remote.origin.url") if own_checkout else "",
        "branch": _git(record.folder, "rev-parse", "--abbrev-ref", "HEAD") if own_checkout else "",
        "commit_hash": commit_hash,
        "version": manifest.version if manifest else commit_hash[:8],
        "commit_date": commit_date,
        "enabled": record.enabled and record.error is None,
        "builtin": record.folder.resolve().parent == builtin_root.resolve(),
        "description": manifest.description if manifest else "",
        "status": record.status,
        "error": record.error,
    }


def extensions_list(engine: Any) -> list[dict[str, Any]]:
    builtin_root = Path(engine.root) / "extensions"
    return [extension_item(record, builtin_root) for record in engine.extensions.records]


# -- /controlnet -----------------------------------------------------------------------------------
def _resolution_slider() -> dict[str, Any]:
    limits = field_limits("processor_res", ControlNetUnit)
    return {
        "name": RESOLUTION_LABEL,
        "value": limits["default"],
        "min": limits["minimum"],
        "max": limits["maximum"],
    }


def _sliders(name: str) -> list[dict[str, Any]]:
    """The extension's slider description of a preprocessor: resolution, then its thresholds."""
    if name == "none":
        return []
    spec = PREPROCESSORS[name]
    thresholds = [t for t in (spec.threshold_a, spec.threshold_b) if t is not None]
    return [
        _resolution_slider(),
        *(
            {"name": t.label, "value": t.default, "min": t.minimum, "max": t.maximum, "step": t.step}
            for t in thresholds
        ),
    ]


def module_detail(annotators: Path) -> dict[str, dict[str, Any]]:
    """Per preprocessor: the extension's `model_free` and `sliders`, and whether it can run here
    (a network preprocessor needs its weights in the annotators folder)."""
    detail = {}
    for name in PREPROCESSORS:
        reason = availability(name, annotators)
        detail[name] = {"model_free": False, "sliders": _sliders(name), "available": reason is None}
        if reason is not None:
            detail[name]["reason"] = reason
    return detail


def _clamped(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def detect_settings(module: str, resolution: int, threshold_a: float, threshold_b: float) -> tuple:
    """(resolution, a, b) as the extension uses them: -1 (or any value ≤ 0) means the default, and
    a value outside a slider's range is brought into it."""
    res = _resolution_slider()
    resolution = res["value"] if resolution <= 0 else int(_clamped(resolution, res["min"], res["max"]))
    spec = PREPROCESSORS[module]
    a, b = (
        None if threshold is None or given < 0 else _clamped(given, threshold.minimum, threshold.maximum)
        for threshold, given in ((spec.threshold_a, threshold_a), (spec.threshold_b, threshold_b))
    )  # None: the preprocessor's default
    return resolution, a, b


def controlnet_router(engine: Any, dependencies: list[Any], allow_urls: bool) -> APIRouter:
    router = APIRouter(
        prefix="/controlnet", dependencies=dependencies, tags=["controlnet"], route_class=JSONErrorRoute
    )

    @router.get("/version")
    def version() -> dict[str, int]:
        return {"version": CONTROLNET_API_VERSION}

    @router.get("/model_list")
    def model_list(update: bool = True) -> dict[str, list[str]]:  # noqa: ARG001 - the folder is read every time
        library = engine.controlnets
        return {"model_list": [library.title_with_hash(f) for f in library.files()]}

    @router.get("/module_list")
    def module_list(alias_names: bool = False) -> dict[str, Any]:  # noqa: ARG001 - our names are the aliases
        return {
            "module_list": list(PREPROCESSORS),
            "module_detail": module_detail(engine.controlnets.annotators),
        }

    @router.get("/settings")
    def settings() -> dict[str, int]:
        return {"control_net_unit_count": DEFAULT_UNITS}

    @router.post("/detect", response_model=ControlNetDetectResponse)
    def detect(request: ControlNetDetectRequest) -> dict[str, Any]:
        module = canonical_name(request.controlnet_module)
        if module is None:
            raise validation_error(
                ("controlnet_module",),
                "Module not available: unknown preprocessor (GET /controlnet/module_list lists them)",
                request.controlnet_module[:100],
            )
        reason = availability(module, engine.controlnets.annotators)
        if reason is not None:
            raise validation_error(("controlnet_module",), f"Module not available: {reason}", module)
        if not request.controlnet_input_images:
            raise validation_error(
                ("controlnet_input_images",), "No image selected: give at least one picture"
            )
        resolution, a, b = detect_settings(
            module,
            request.controlnet_processor_res,
            request.controlnet_threshold_a,
            request.controlnet_threshold_b,
        )
        images = []
        for i, value in enumerate(request.controlnet_input_images):
            try:
                picture = decode_image(value, allow_urls=allow_urls)
            except ValueError as exc:
                raise validation_error(("controlnet_input_images", i), str(exc)) from None
            try:
                images.append(encode_image(engine.detect_control(module, picture, resolution, a, b)))
            except OutOfMemory as exc:
                raise HTTPException(507, str(exc)) from None  # as for a job (api.routes.common.wait)
        return {"images": images, "info": "Success"}

    return router
