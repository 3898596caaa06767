"""txt2img handlers: UI values → GenerationParams, a submitted job → progress/preview/images.

Plain functions over plain values (no Gradio), so they are tested without a browser; `ui.tabs.txt2img`
lays out the tab and wires them to its components.
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.schema.params import GenerationParams
from engine.schema.sampler_params import overrides_from_entries
from engine.service.jobs import JobInterrupted
from ui.common import EngineLike, check_finite, error_message, message_html
from ui.handlers.controlnet import units_from_values
from ui.handlers.inputs import as_number, open_picture
from ui.handlers.progress import SessionJobs, progress_html

POLL_SECONDS = 0.25  # how often the running generator re-reads job.progress / job.preview

# Hires fix controls (txt2img only; other tabs pass None, which keeps the defaults: off).
HIRES_FIELDS = (
    "enable_hr",
    "hr_upscaler",
    "hr_second_pass_steps",
    "denoising_strength",
    "hr_scale",
    "hr_resize_x",
    "hr_resize_y",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
)

# The variation seed row (A1111's "Extra" beside the seed), in every generation tab.
VARIATION_FIELDS = ("subseed", "subseed_strength")
# The Refiner accordion (ui.widgets.refiner).
REFINER_FIELDS = ("refiner_checkpoint", "refiner_switch_at")
# Forge's Distilled CFG Scale beside CFG Scale (Flux dev's guidance input).
GUIDANCE_FIELDS = ("distilled_cfg_scale",)
# Fields a tab may lack (None keeps the default), in the order they close PARAM_FIELDS.
OPTIONAL_FIELDS = (*HIRES_FIELDS, *VARIATION_FIELDS, *REFINER_FIELDS, *GUIDANCE_FIELDS)


def build_params(
    prompt: str,
    negative_prompt: str,
    sampler_name: str,
    scheduler: str,
    steps: float,
    cfg_scale: float,
    seed: float | None,
    width: float,
    height: float,
    n_iter: float,
    batch_size: float,
    override_settings: list[str] | None = None,
    styles: list[str] | None = None,
    *optional: Any,
) -> GenerationParams:
    """UI values → GenerationParams. Raises pydantic's ValidationError on invalid values, and
    ValueError for an override entry that is not a sampler parameter. `optional`: the
    OPTIONAL_FIELDS values (hires fix, variation seed, refiner, distilled guidance; None keeps a
    default)."""
    hr = {
        name: as_number(value)
        for name, value in zip(OPTIONAL_FIELDS, optional, strict=False)
        if value is not None
    }
    if "enable_hr" in hr:
        hr["enable_hr"] = bool(hr["enable_hr"])
    for name, same in (("hr_sampler_name", "Use same sampler"), ("hr_scheduler", "Use same scheduler")):
        if hr.get(name) == same:  # A1111 writes these keys only when they differ from the first pass
            del hr[name]
    return GenerationParams(
        **hr,
        prompt=prompt or "",
        negative_prompt=negative_prompt or "",
        sampler_name=sampler_name or "",
        scheduler=scheduler or "",
        steps=as_number(steps),
        cfg_scale=cfg_scale,
        seed=-1 if seed is None else as_number(seed),
        width=as_number(width),
        height=as_number(height),
        n_iter=as_number(n_iter),
        batch_size=as_number(batch_size),
        styles=tuple(styles or ()),
        **overrides_from_entries(override_settings),
    )


# Order of the values `build_params` takes (read from its signature, the one place that says it);
# the Generate event passes its inputs in this order.
PARAM_FIELDS = (
    *(name for name in inspect.signature(build_params).parameters if name != "optional"),
    *OPTIONAL_FIELDS,
)


@dataclass
class GenInfo:
    """What the last run produced, kept per session so ♻️ and the gallery selection can use it."""

    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    selected: int = 0


@dataclass
class RunUpdate:
    """One refresh of the txt2img outputs. `None` fields stay as they are on the page."""

    progress: str
    running: bool
    preview: Any = None
    images: list[Any] | None = None
    info: GenInfo | None = None
    message: str | None = None  # user-facing error text


def infotext_html(info: GenInfo, index: int = 0) -> str:
    """The selected image's parameters text (A1111 shows it under the gallery), plus notes."""
    parts = []
    if info.infotexts:
        text = info.infotexts[min(max(index, 0), len(info.infotexts) - 1)]
        parts.append(f'<div class="atelier-infotext">{html.escape(text).replace(chr(10), "<br>")}</div>')
    parts.extend(message_html(note, "info") for note in info.notes)
    return "".join(parts)


def _images_with_infotext(images: Sequence[Any], infotexts: Sequence[str]) -> list[Any]:
    """Copies that carry their infotext, so the gallery's PNG (download, drag to PNG Info) has it."""
    tagged = []
    for i, image in enumerate(images):
        if i < len(infotexts) and hasattr(image, "copy"):
            image = image.copy()
            image.info["parameters"] = infotexts[i]
        tagged.append(image)
    return tagged


def run_txt2img(
    engine: EngineLike,
    jobs: SessionJobs,
    session: str,
    values: Sequence[Any],
    poll_seconds: float = POLL_SECONDS,
    control_values: Sequence[Any] = (),
    extension_args: dict[str, dict[str, Any]] | None = None,
    script: Any = None,
) -> Iterator[RunUpdate]:
    """Submit a txt2img job and report on it until it finishes; `values` are the UI values in
    PARAM_FIELDS order, `control_values` the ControlNet units panel's (ui.handlers.controlnet),
    `extension_args` / `script` what the extensions' panels and the Script dropdown asked for."""

    def submit() -> Any:
        check_finite(dict(zip(PARAM_FIELDS, values, strict=False)))
        control = units_from_values(control_values, open_picture)
        params = build_params(*values)
        return engine.submit_txt2img(
            params, control=control or None, extension_args=extension_args or None, script=script
        )

    yield from follow_job(jobs, session, submit, poll_seconds)


def follow_job(
    jobs: SessionJobs,
    session: str,
    submit: Callable[[], Any],
    poll_seconds: float = POLL_SECONDS,
) -> Iterator[RunUpdate]:
    """Submit a job (`submit()` builds the request and returns the Job) and report on it until it
    finishes: progress, previews, then the images. Errors come back as `RunUpdate.message`.
    If the caller stops iterating early (the browser went away), the job is interrupted."""
    try:
        job = submit()
    except Exception as exc:  # invalid params or a refused submit: a message, never a traceback
        yield RunUpdate(progress="", running=False, message=error_message(exc))
        return

    jobs.set(session, job)
    last_preview = None
    try:
        yield RunUpdate(progress=progress_html(None, started=False), running=True)
        while not job.wait(poll_seconds):
            preview = job.preview
            position = job.position() if callable(getattr(job, "position", None)) else 0
            update = RunUpdate(progress=progress_html(job.progress, position=position), running=True)
            if preview is not None and preview is not last_preview:
                update.preview, last_preview = preview, preview
            yield update
    finally:
        jobs.clear(session, job)
        if not job.done:
            job.interrupt()

    if isinstance(job.error, JobInterrupted):  # interrupted while still waiting in the queue
        yield RunUpdate(progress="", running=False, info=GenInfo(notes=["Interrupted before it started."]))
        return
    if job.error is not None:
        yield RunUpdate(progress="", running=False, message=error_message(job.error))
        return
    result = job.result
    if not hasattr(result, "images"):  # a batch job reports what it wrote (engine BatchReport)
        notes = [result.summary(), *result.notes]
        if result.interrupted:
            notes.append("Interrupted: the remaining pictures were not processed.")
        yield RunUpdate(progress="", running=False, info=GenInfo(notes=notes))
        return
    info = GenInfo(infotexts=list(result.infotexts), seeds=list(result.seeds), notes=list(result.notes))
    if result.interrupted:
        info.notes.append("Interrupted: showing the images finished so far.")
    yield RunUpdate(
        progress="",
        running=False,
        images=_images_with_infotext(result.images, result.infotexts),
        info=info,
    )


def interrupt_job(jobs: SessionJobs, session: str, *, skip: bool = False) -> bool:
    """Interrupt (or skip the current batch of) the session's job; False when none is running."""
    job = jobs.get(session)
    if job is None:
        return False
    if skip:
        job.skip()
    else:
        job.interrupt()
    return True


def reuse_seed(info: GenInfo | None, current: float | None) -> float | None:
    """♻️: the seed of the selected image of the last run (the current seed when there is none)."""
    if info is None or not info.seeds:
        return current
    return info.seeds[min(max(info.selected, 0), len(info.seeds) - 1)]


def random_seed() -> int:
    return -1


def select_image(info: GenInfo | None, index: int) -> tuple[GenInfo, str]:
    info = info or GenInfo()
    info.selected = index
    return info, infotext_html(info, index)
