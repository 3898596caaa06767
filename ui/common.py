"""Shared pieces of the UI: the engine interface the tabs rely on and error → message conversion.

The tabs talk to the engine only through `EngineLike`, so tests (and `tests.fakes.fake_engine`) can hand
them a small double instead of a real model.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from engine.output.images import SaveError
from engine.service.memory import OutOfMemory

if TYPE_CHECKING:
    from pathlib import Path

    from engine.controlnet.units import ControlInput, ControlNetUnit
    from engine.models.extra_networks import NetworkCard
    from engine.pipeline.img2img import Img2ImgInputs
    from engine.plugins.loader import ExtensionManager
    from engine.plugins.script_jobs import ScriptCall
    from engine.schema.params import GenerationParams, Img2ImgParams
    from engine.schema.settings import Settings
    from engine.schema.styles import StyleFile


class EngineLike(Protocol):
    """The part of `engine.service.facade.Engine` the UI uses."""

    @property
    def settings(self) -> Settings: ...

    def update_settings(self, **changes: Any) -> Settings: ...
    def list_checkpoints(self) -> list[str]: ...
    def refresh_checkpoints(self) -> list[str]: ...
    def current_checkpoint(self) -> str | None: ...
    def load_checkpoint(self, title: str) -> None: ...
    def submit_load(self, title: str) -> Any: ...
    def preferred_sampler_settings(self, title: str | None = None) -> dict[str, Any]: ...
    def default_size(self) -> int: ...
    def size_choices(self) -> tuple[int, list[tuple[int, int]]]: ...
    def generation_proposal(self) -> dict[str, float]: ...
    def memory_plan_text(self) -> str: ...
    def sampler_names(self) -> list[str]: ...
    def schedule_names(self) -> list[str]: ...
    def schedule_hint(self, sampler: str) -> str: ...
    def count_tokens(self, prompt: str, steps: int, *, is_negative: bool = False) -> tuple[int, int]: ...
    def styles(self) -> StyleFile: ...
    def save_style(self, name: str, prompt: str, negative_prompt: str) -> StyleFile: ...
    def extra_networks(self) -> list[NetworkCard]: ...

    extensions: ExtensionManager

    def submit_txt2img(
        self,
        params: GenerationParams,
        control: list[ControlInput] | None = None,
        *,
        extension_args: dict[str, Any] | None = None,
        script: ScriptCall | None = None,
    ) -> Any: ...
    def submit_img2img(
        self,
        params: Img2ImgParams,
        inputs: Img2ImgInputs,
        control: list[ControlInput] | None = None,
        *,
        extension_args: dict[str, Any] | None = None,
        script: ScriptCall | None = None,
    ) -> Any: ...
    def controlnet_models(self) -> list[str]: ...
    def upscaler_names(self) -> list[str]: ...
    def submit_extras(self, params: Any, pictures: list[Any]) -> Any: ...
    def submit_extras_folder(self, params: Any, input_dir: Path, output_dir: Path) -> Any: ...
    def preprocessors(self) -> list[tuple[str, str | None]]: ...
    def preview_control(self, unit: ControlNetUnit, image: Any, width: int, height: int) -> Any: ...
    def submit_img2img_batch(
        self,
        params: Img2ImgParams,
        input_dir: Path,
        output_dir: Path,
        mask_dir: Path | None = None,
        use_png_info: bool = False,
        control: list[ControlInput] | None = None,
        *,
        extension_args: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Any: ...


def _field_message(error: dict[str, Any]) -> str:
    """One pydantic error as "field: must be ..." — the wording a person expects in a form."""
    msg = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if msg.startswith("Input should be "):
        msg = "must be " + msg[len("Input should be ") :]
    loc = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    return f"{loc}: {msg}" if loc else msg


def check_finite(values: Mapping[str, Any]) -> None:
    """Refuse NaN and ±Infinity by the field's name before anything computes with them. A browser's
    number inputs cannot hold them, but a client driving the page's events can send them."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: must be a finite number, not {value}")


def error_message(exc: BaseException) -> str:
    """A readable one-paragraph message for a user error; never a traceback."""
    if isinstance(exc, ValidationError):
        return "; ".join(_field_message(e) for e in exc.errors(include_url=False))
    text = str(exc).strip()
    if isinstance(exc, (ValueError, FileNotFoundError, SaveError, OutOfMemory)) and text:
        return text
    # Anything else is a bug or an environment problem: name the kind so it can be reported.
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def message_html(text: str, kind: str = "error") -> str:
    """A small coloured notice (kind: error | info) for an HTML component."""
    return f'<div class="atelier-msg atelier-msg-{kind}">{html.escape(text)}</div>'
