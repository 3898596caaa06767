"""The txt2img tab: prompt boxes, sampling controls, Generate/Interrupt/Skip, live progress, gallery.

Only layout and wiring live here; what the buttons do is in `ui.txt2img_run` (plain functions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.params import field_limits
from ui.common import EngineLike, message_html
from ui.extra_networks import build_extra_networks
from ui.progress import SessionJobs
from ui.styles import build_styles
from ui.txt2img_run import (
    PARAM_FIELDS,
    GenInfo,
    RunUpdate,
    infotext_html,
    interrupt_job,
    random_seed,
    reuse_seed,
    run_txt2img,
    select_image,
)

PROMPT_PLACEHOLDER = "a large red circle at the top left on a blue background"


@dataclass
class Txt2ImgUI:
    """The components other tabs need (PNG Info's "Send to txt2img" fills `fields`)."""

    fields: dict[str, gr.components.Component]
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    gallery: gr.Gallery
    infotext: gr.HTML
    progress: gr.HTML
    # Chain a recount of both token counters after an event that sets the prompts from code
    # (a function's output does not fire the boxes' change event).
    recount_after: Callable[[Any], None]


def _slider(name: str, label: str, value: float | None = None, **overrides: Any) -> gr.Slider:
    """A slider whose range comes from GenerationParams' constraints (the one schema)."""
    limits = field_limits(name)
    kwargs: dict[str, Any] = {
        "minimum": limits.get("minimum", 0),
        "maximum": limits.get("maximum", 100),
        "step": limits.get("step", 1),
        "value": limits["default"] if value is None else value,
        "buttons": [],  # no ↺ reset button: A1111's sliders have none and it crowds the label
    }
    kwargs.update(overrides)
    return gr.Slider(label=label, elem_id=f"txt2img_{name}", **kwargs)


def _to_outputs(update: RunUpdate) -> tuple[Any, ...]:
    """A RunUpdate as values for (progress, preview, gallery, infotext, gen_info, generate,
    interrupt, skip); gr.skip() leaves a component as it is."""
    running = update.running
    if update.preview is not None:
        preview = gr.update(value=update.preview, visible=True)
    elif not running:
        preview = gr.update(value=None, visible=False)  # the preview makes room for the gallery again
    else:
        preview = gr.update(visible=True)  # an empty frame until the first preview is decoded
    if update.info is not None:
        infotext = infotext_html(update.info)
    elif update.message:
        infotext = message_html(update.message)
    else:
        infotext = gr.skip()
    # While running, the preview takes the gallery's place (as in A1111), then hands it back.
    gallery = (
        gr.update(visible=not running)
        if update.images is None
        else gr.update(value=update.images, visible=True)
    )
    return (
        update.progress,
        preview,
        gallery,
        infotext,
        update.info if update.info is not None else gr.skip(),
        gr.update(visible=not running),
        gr.update(visible=running),
        gr.update(visible=running),
    )


def counter_html(used: int, limit: int) -> str:
    """A1111's "used/limit" token count shown in the corner of a prompt box."""
    return f'<span class="token-count" title="tokens used / chunk limit">{used}/{limit}</span>'


def build_txt2img_tab(engine: EngineLike, jobs: SessionJobs) -> Txt2ImgUI:
    """Lay out the tab inside the current gr.Tab context and wire its events."""
    settings = engine.settings
    size = engine.default_size()
    f: dict[str, gr.components.Component] = {}

    with gr.Row(elem_id="txt2img_toprow"):  # not equal_height: the styles box must not stretch the prompts
        with gr.Column(scale=6):
            with gr.Group(elem_classes=["prompt-box"]):
                f["prompt"] = gr.Textbox(
                    label="Prompt",
                    lines=3,
                    max_lines=8,
                    placeholder=PROMPT_PLACEHOLDER,
                    elem_id="txt2img_prompt",
                    show_label=False,
                )
                token_counter = gr.HTML(
                    counter_html(0, 75), elem_id="txt2img_token_counter", elem_classes=["token-counter"]
                )
            with gr.Group(elem_classes=["prompt-box"]):
                f["negative_prompt"] = gr.Textbox(
                    label="Negative prompt",
                    lines=2,
                    max_lines=6,
                    placeholder="Negative prompt",
                    elem_id="txt2img_neg_prompt",
                    show_label=False,
                )
                negative_counter = gr.HTML(
                    counter_html(0, 75),
                    elem_id="txt2img_negative_token_counter",
                    elem_classes=["token-counter"],
                )
        with gr.Column(scale=1, min_width=240, elem_id="txt2img_actions"):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate", size="lg")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt", visible=False, min_width=100)
                skip = gr.Button("Skip", elem_id="txt2img_skip", visible=False, min_width=100)
            styles = build_styles(engine, f["prompt"], f["negative_prompt"])
            f["styles"] = styles.picker

    picked = build_extra_networks(engine, f["prompt"])

    with gr.Row(elem_id="txt2img_main"):
        with gr.Column(scale=1, elem_id="txt2img_settings"):
            with gr.Row():
                f["sampler_name"] = gr.Dropdown(
                    engine.sampler_names(),
                    value=settings.default_sampler,
                    label="Sampling method",
                    elem_id="txt2img_sampler",
                )
                f["scheduler"] = gr.Dropdown(
                    engine.schedule_names(),
                    value=settings.default_scheduler,
                    label="Schedule type",
                    info=engine.schedule_hint(settings.default_sampler),
                    elem_id="txt2img_scheduler",
                )
            f["steps"] = _slider("steps", "Sampling steps", settings.default_steps)
            with gr.Row():
                with gr.Column(scale=3):
                    f["width"] = _slider("width", "Width", size)
                    f["height"] = _slider("height", "Height", size)
                with gr.Column(scale=2, min_width=160):
                    f["n_iter"] = _slider("n_iter", "Batch count", maximum=16)
                    f["batch_size"] = _slider("batch_size", "Batch size")
            f["cfg_scale"] = _slider("cfg_scale", "CFG Scale", settings.default_cfg_scale)
            with gr.Row(elem_id="txt2img_seed_row", equal_height=True):
                f["seed"] = gr.Number(label="Seed", value=-1, precision=0, elem_id="txt2img_seed", scale=4)
                random_button = gr.Button("🎲", elem_id="txt2img_random_seed", scale=0, min_width=48)
                reuse_button = gr.Button("♻️", elem_id="txt2img_reuse_seed", scale=0, min_width=48)
            # A1111's "Override settings": sampler parameters that came with pasted parameters
            # (PNG Info → Send to txt2img) apply to this tab's jobs only; remove an entry to fall
            # back to the Sampler settings tab. Hidden while there is nothing to override.
            f["override_settings"] = gr.Dropdown(
                choices=[],
                value=[],
                multiselect=True,
                allow_custom_value=False,
                label="Override settings",
                info="Sampler parameters from the pasted parameters, for these jobs only",
                visible=False,
                elem_id="txt2img_override_settings",
            )

        with gr.Column(scale=1, elem_id="txt2img_results"):
            progress = gr.HTML("", elem_id="txt2img_progress")
            preview = gr.Image(
                label="Preview",
                visible=False,
                interactive=False,
                elem_id="txt2img_preview",
                buttons=[],
                height=520,
            )
            gallery = gr.Gallery(
                label="Output",
                show_label=False,
                elem_id="txt2img_gallery",
                columns=4,
                height=520,
                preview=True,
                object_fit="contain",
                format="png",
                interactive=False,
                buttons=["download", "fullscreen"],
            )
            infotext = gr.HTML("", elem_id="txt2img_infotext")

    gen_info = gr.State(GenInfo())
    inputs = [f[name] for name in PARAM_FIELDS]
    outputs = [progress, preview, gallery, infotext, gen_info, generate, interrupt, skip]

    # Spelled-out parameters: Gradio injects gr.Request by inspecting the signature, which does
    # not work behind *args.
    def on_generate(
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
        override_settings: list[str] | None,
        styles: list[str] | None,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        values = (
            prompt,
            negative_prompt,
            sampler_name,
            scheduler,
            steps,
            cfg_scale,
            seed,
            width,
            height,
            n_iter,
            batch_size,
            override_settings,
            styles,
        )
        for update in run_txt2img(engine, jobs, request.session_hash or "", values):
            if update.message:
                gr.Warning(update.message)
            yield _to_outputs(update)

    generate.click(
        on_generate,
        inputs=inputs,
        outputs=outputs,
        show_progress="hidden",
        concurrency_limit=None,  # the engine queues jobs itself; each session just polls its own
        api_visibility="private",
    )
    # Shift+Enter in the prompt box generates (Gradio submits multi-line boxes on Shift+Enter).
    f["prompt"].submit(
        on_generate,
        inputs=inputs,
        outputs=outputs,
        show_progress="hidden",
        concurrency_limit=None,
        api_visibility="private",
    )

    def on_interrupt(request: gr.Request) -> None:
        interrupt_job(jobs, request.session_hash or "")

    def on_skip(request: gr.Request) -> None:
        interrupt_job(jobs, request.session_hash or "", skip=True)

    f["sampler_name"].change(
        lambda sampler: gr.Dropdown(info=engine.schedule_hint(sampler)),
        inputs=f["sampler_name"],
        outputs=f["scheduler"],
        queue=False,
        api_visibility="private",
    )
    # Token counters: recounted as the user types (only the latest keystroke's count is kept)
    # and when the step count changes, since prompt editing schedules depend on it.
    counters = ((f["prompt"], token_counter, False), (f["negative_prompt"], negative_counter, True))

    def make_recount(negative: bool) -> Callable[[str, float], str]:
        def recount(text: str, steps: float) -> str:
            return counter_html(*engine.count_tokens(text or "", int(steps or 1), is_negative=negative))

        return recount

    counter_events = dict(queue=False, show_progress="hidden", api_visibility="private")
    for box, counter, negative in counters:
        for trigger in (box.change, f["steps"].change):
            trigger(
                make_recount(negative), inputs=[box, f["steps"]], outputs=counter,
                trigger_mode="always_last", **counter_events,
            )  # fmt: skip

    def recount_after(event: Any) -> None:
        for box, counter, negative in counters:
            event.then(make_recount(negative), inputs=[box, f["steps"]], outputs=counter, **counter_events)

    recount_after(styles.applied)
    recount_after(picked)
    interrupt.click(on_interrupt, queue=False, api_visibility="private")
    skip.click(on_skip, queue=False, api_visibility="private")
    random_button.click(random_seed, outputs=f["seed"], queue=False, api_visibility="private")
    reuse_button.click(
        reuse_seed, inputs=[gen_info, f["seed"]], outputs=f["seed"], queue=False, api_visibility="private"
    )

    def on_select(info: GenInfo, event: gr.SelectData) -> tuple[GenInfo, str]:
        return select_image(info, int(event.index))

    gallery.select(
        on_select, inputs=gen_info, outputs=[gen_info, infotext], queue=False, api_visibility="private"
    )

    return Txt2ImgUI(
        fields=f,
        generate=generate,
        interrupt=interrupt,
        skip=skip,
        gallery=gallery,
        infotext=infotext,
        progress=progress,
        recount_after=recount_after,
    )
