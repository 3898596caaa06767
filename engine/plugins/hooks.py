"""Extension hooks: named stages, a typed context for each, and the runner (docs/design.md, example 5).

An extension registers `callback(ctx)` for a `Stage`; the engine calls every callback of a stage
in `order` (lower first, then the extensions' load order) and hands each one the stage's context
dataclass. A context's fields say what the stage knows; the ones a callback may replace are marked
"may be replaced". A callback that raises is logged, noted on the job's result and reported in the
Extensions tab; the picture is still made. No library is monkey-patched: the pipelines call
`HookRunner.run` at each stage (engine.process, engine.img2img, engine.hires).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the contexts' annotations only: nothing here is imported at run time
    from pathlib import Path

    import torch
    from PIL import Image

    from engine.conditioning.schedule import Conditioning
    from engine.models.types import LoadedModel
    from engine.schema.params import GenerationParams
    from engine.schema.settings import Settings

log = logging.getLogger(__name__)


class Stage(StrEnum):
    # -- application -------------------------------------------------------------------------------
    APP_STARTED = "app_started"  # AppContext: the engine is ready (before the UI is served)
    MODEL_LOADED = "model_loaded"  # ModelContext: a checkpoint was loaded (or taken from the cache)
    UI_TABS = "ui_tabs"  # UITabsContext: the tab list, after every tab is built
    SETTINGS_CHANGED = "settings_changed"  # SettingsContext: Settings were applied
    # -- generation, in the order they fire -------------------------------------------------------
    PARAMS_RESOLVED = "params_resolved"  # GenerationContext: seed resolved, inputs checked
    BEFORE_ENCODE = "before_encode"  # PromptContext: prompts about to be encoded
    AFTER_ENCODE = "after_encode"  # PromptContext: + conditioning
    BEFORE_SAMPLING = "before_sampling"  # SamplingContext: initial latents and σ schedule
    BEFORE_MODEL_CALL = "before_model_call"  # StepContext: x and σ of a model evaluation
    AFTER_CFG = "after_cfg"  # StepContext: + uncond / cond / guided x̂₀
    STEP_END = "step_end"  # StepContext: x after the step, x̂₀, optional preview
    AFTER_SAMPLING = "after_sampling"  # SamplingContext: final latents of the pass
    AFTER_DECODE = "after_decode"  # DecodeContext: the decoded batch
    POSTPROCESS_IMAGE = "postprocess_image"  # ImageContext: one picture, before its infotext is final
    BEFORE_SAVE = "before_save"  # ImageContext: picture and infotext about to be saved
    AFTER_SAVE = "after_save"  # ImageContext: + the path it was saved to (None when not saved)


APP_STAGES = (Stage.APP_STARTED, Stage.MODEL_LOADED, Stage.UI_TABS, Stage.SETTINGS_CHANGED)


# -- contexts -------------------------------------------------------------------------------------
@dataclass
class AppContext:
    # The Engine (engine.service.facade): typed loosely because the facade imports this module.
    engine: Any


@dataclass
class ModelContext:
    model: LoadedModel
    name: str


@dataclass
class UITabsContext:
    tabs: list[str]  # the labels of the tabs, in order


@dataclass
class SettingsContext:
    settings: Settings  # the new values
    changed: list[str]  # the names of the settings that changed


@dataclass
class GenerationContext:
    """One job, shared by every generation stage. `kind` is "txt2img", "img2img" or "inpaint";
    the hires pass of a txt2img job runs with `pass_name == "hires"`."""

    kind: str
    params: GenerationParams  # or Img2ImgParams; may be replaced in PARAMS_RESOLVED only
    model: LoadedModel
    pass_name: str = "first"
    # Written into every picture's infotext (A1111's `extra_generation_params`): "Key" -> value.
    extra_infotext: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # shown under the gallery
    args: Mapping[str, Any] = field(default_factory=dict)  # the calling extension's UI / API values
    state: dict[str, Any] = field(default_factory=dict)  # per-job scratch space, one dict per extension


@dataclass
class PromptContext:
    gen: GenerationContext
    prompt: str  # may be replaced in BEFORE_ENCODE
    negative_prompt: str  # may be replaced in BEFORE_ENCODE
    conditioning: Conditioning | None = None  # set in AFTER_ENCODE


@dataclass
class SamplingContext:
    gen: GenerationContext
    latents: torch.Tensor  # (N, C, h, w): noised start in BEFORE_SAMPLING (may be replaced), result after
    sigmas: torch.Tensor  # the σ schedule of this pass (may be replaced in BEFORE_SAMPLING)
    seeds: list[int]


@dataclass
class StepContext:
    """One model evaluation (BEFORE_MODEL_CALL, AFTER_CFG) or one finished step (STEP_END).
    `step` is the 0-based step of the pass, `steps` its count."""

    gen: GenerationContext
    step: int
    steps: int
    sigma: float
    x: torch.Tensor  # may be replaced in BEFORE_MODEL_CALL
    uncond: torch.Tensor | None = None  # AFTER_CFG: the unconditional x̂₀ (None when CFG scale is 1)
    cond: torch.Tensor | None = None  # AFTER_CFG: the conditional x̂₀
    denoised: torch.Tensor | None = None  # AFTER_CFG: the guided x̂₀ (may be replaced); STEP_END: the step's
    preview: Image.Image | None = None  # STEP_END: the live preview picture when one was made at this step


@dataclass
class DecodeContext:
    gen: GenerationContext
    latents: torch.Tensor
    images: torch.Tensor  # (N, 3, H, W) in [0, 1]; may be replaced


@dataclass
class ImageContext:
    gen: GenerationContext
    index: int  # the picture's place in the job
    seed: int
    image: Image.Image  # may be replaced in POSTPROCESS_IMAGE and BEFORE_SAVE
    infotext: str = ""  # BEFORE_SAVE / AFTER_SAVE: the final text (may be replaced in BEFORE_SAVE)
    path: Path | None = None  # AFTER_SAVE: where it was written (None when saving is off)


Callback = Callable[[Any], None]


@dataclass(frozen=True)
class Registration:
    stage: Stage
    callback: Callback
    extension: str  # who registered it: its name in errors, its key for `args`
    order: int = 0
    load_index: int = 0  # the extension's place in the load order (ties after `order`)


@dataclass
class HookError:
    extension: str
    stage: str
    message: str
    when: float = field(default_factory=time.time)


class HookRegistry:
    """Every extension's callbacks, and the errors they raised (for the Extensions tab).
    Disabled extensions keep their registrations but are skipped from the next job on."""

    def __init__(self) -> None:
        self._by_stage: dict[Stage, list[Registration]] = {stage: [] for stage in Stage}
        self.disabled: set[str] = set()
        self.errors: list[HookError] = []
        self._lock = threading.Lock()

    def add(self, registration: Registration) -> None:
        with self._lock:
            entries = self._by_stage[registration.stage]
            entries.append(registration)
            entries.sort(key=lambda r: (r.order, r.load_index))

    def remove_extension(self, name: str) -> None:
        with self._lock:
            for stage in Stage:
                self._by_stage[stage] = [r for r in self._by_stage[stage] if r.extension != name]

    def callbacks(self, stage: Stage) -> list[Registration]:
        return [r for r in self._by_stage[stage] if r.extension not in self.disabled]

    def has(self, stage: Stage) -> bool:
        return bool(self.callbacks(stage))

    def record_error(self, error: HookError) -> None:
        with self._lock:
            self.errors.append(error)
            del self.errors[:-50]  # the latest ones are what the Extensions tab shows

    def runner(self, args: Mapping[str, Mapping[str, Any]] | None = None) -> HookRunner:
        return HookRunner(self, args or {})

    def run_app(self, stage: Stage, ctx: Any) -> None:
        """Application stages: no job, errors go to the log and the Extensions tab."""
        HookRunner(self, {}).run(stage, ctx)


class HookRunner:
    """The hooks of one job: the registry plus the job's per-extension values (`args`)."""

    def __init__(self, registry: HookRegistry | None, args: Mapping[str, Mapping[str, Any]]):
        self.registry = registry
        self.args = dict(args)

    @classmethod
    def none(cls) -> HookRunner:
        return cls(None, {})

    def has(self, stage: Stage) -> bool:
        return self.registry is not None and self.registry.has(stage)

    def run(self, stage: Stage, ctx: Any) -> Any:
        """Call every callback of `stage` with `ctx`; returns `ctx` (callbacks change it in place)."""
        if self.registry is None:
            return ctx
        gen = ctx if isinstance(ctx, GenerationContext) else getattr(ctx, "gen", None)
        for registration in self.registry.callbacks(stage):
            if gen is not None:  # each extension sees its own values
                gen.args = self.args.get(registration.extension, {})
            try:
                registration.callback(ctx)
            except Exception as exc:  # an extension's bug must not cost the user the picture
                message = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "extension %s failed in %s:\n%s",
                    registration.extension,
                    stage.value,
                    traceback.format_exc(),
                )
                self.registry.record_error(HookError(registration.extension, stage.value, message))
                if gen is not None:
                    note = f"extension {registration.extension} failed in {stage.value}: {message}"
                    if note not in gen.notes:
                        gen.notes.append(note)
        if gen is not None:
            gen.args = {}
        return ctx
