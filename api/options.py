"""`/sdapi/v1/options`: the Settings over HTTP, as A1111 serves them.

POST may change what a user changes in the Settings tab, and `sd_model_checkpoint` loads that
checkpoint (A1111's way of switching models). It may not change where files go or anything
security-related: a client that can reach the API must not be able to redirect outputs into
another folder (or over the app's own files) — those stay on the command line and in Settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from pydantic import ValidationError

from api.convert import invalid

# Settings a request may never change: every output folder.
PROTECTED_PREFIXES = ("outdir",)
# Command-line flags whose values /cmd-flags hides.
SECRET_FLAGS = ("api_auth", "gradio_auth")


def current_options(engine: Any) -> dict[str, Any]:
    options = engine.settings.model_dump()
    options["sd_model_checkpoint"] = engine.current_checkpoint()
    return options


def apply_options(engine: Any, changes: dict[str, Any], load: Callable[[str], Any]) -> dict[str, Any]:
    """Validate everything first, then load the checkpoint and save the settings together.
    `load(title)` loads a checkpoint and returns once it is loaded, raising an HTTP error if not."""
    changes = dict(changes)
    protected = [key for key in changes if key.startswith(PROTECTED_PREFIXES)]
    if protected:
        raise HTTPException(403, f"{protected[0]} cannot be changed over the API (paths are set in Settings)")
    checkpoint = changes.pop("sd_model_checkpoint", None)
    known = type(engine.settings).model_fields
    for key in changes:
        if key not in known:
            raise invalid((key,), "unknown option (GET /sdapi/v1/options lists them)")
    if checkpoint is not None and checkpoint not in engine.list_checkpoints():
        raise HTTPException(404, f"checkpoint not found: {checkpoint!r}")
    try:
        type(engine.settings).model_validate({**engine.settings.model_dump(), **changes})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise invalid(tuple(error["loc"]), error["msg"], error.get("input")) from None
    if checkpoint is not None:
        load(checkpoint)
    if changes:
        engine.update_settings(**changes)
    return current_options(engine)
