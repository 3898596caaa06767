"""A checkpoint's preferred sampler settings, read from the `<stem>.json` beside it.

That file is where A1111 keeps a checkpoint's user metadata (description, notes, preferred VAE:
`ui_extra_networks_checkpoints_user_metadata.py`); we read one more key from it:

    {"description": "...", "sampler settings": {"s_min_uncond": 3, "s_min_uncond_all": true}}

Keys are A1111 option names, the same rows as the Sampler settings tab (`engine.schema.sampler_params`).
Model authors publish such recommendations in prose ("CFG 5, clip skip 2"); InvokeAI stores them
per model as "default settings" and Forge applies per-family presets. Here the engine applies them
to every job on that checkpoint for each setting the user left at A1111's default (see
`engine.schema.sampler_params.resolve_overrides`); the values land in the infotext like any other.

The built-in model ships one (`models/builtin/atelier-tiny.json`): README, "Where the model is stiff".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine.schema.sampler_params import NAMES, SamplerOverrides

log = logging.getLogger(__name__)

KEY = "sampler settings"


def metadata_path(checkpoint: Path) -> Path:
    """`<stem>.json` beside a checkpoint file; `<folder>.json` beside a diffusers folder."""
    return (
        checkpoint.with_suffix(".json")
        if checkpoint.is_file()
        else checkpoint.with_name(checkpoint.name + ".json")
    )


def read_preferences(checkpoint: Path) -> dict[str, Any]:
    """{option name: value} the checkpoint prefers; {} when it has no metadata file or no such key.

    Raises ValueError naming the file when it is not JSON, or a key or value is not a valid
    sampler setting (checked by the same model that checks a job's overrides)."""
    path = metadata_path(checkpoint)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name}: not readable JSON ({exc})") from exc
    raw = data.get(KEY, {}) if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise ValueError(f"{path.name}: {KEY!r} must be an object of option names and values")
    unknown = sorted(set(raw) - set(NAMES))
    if unknown:
        raise ValueError(f"{path.name}: unknown {KEY} {unknown}; known: {', '.join(NAMES)}")
    try:
        checked = SamplerOverrides(**raw)
    except ValueError as exc:  # pydantic names the field and the bad value
        raise ValueError(f"{path.name}: {exc}") from exc
    return {name: getattr(checked, name) for name in raw}


def preferences_or_empty(checkpoint: Path) -> dict[str, Any]:
    """`read_preferences`, but a broken file is logged and ignored: the checkpoint still draws
    (with A1111's defaults), and the log says which file to fix."""
    try:
        return read_preferences(checkpoint)
    except ValueError as exc:
        log.warning("ignoring the checkpoint's preferred sampler settings: %s", exc)
        return {}
