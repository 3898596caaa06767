"""The pieces every generation tab shares (txt2img, img2img, Inpaint): the prompt row with its
token counters and Generate/Interrupt/Skip, the sampling controls, the results column, and the
wiring of a run to them. Each tab passes its name, which prefixes the elem_ids (`txt2img_prompt`,
`img2img_prompt`, ...) as in A1111, so browser tests and user CSS can tell the tabs apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import BaseModel

from engine.schema.params import Img2ImgParams, field_limits
from ui.common import EngineLike, message_html
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import (
    GenInfo,
    RunUpdate,
    infotext_html,
    interrupt_job,
    random_seed,
    reuse_seed,
    select_image,
)
from ui.widgets.extra_networks import build_extra_networks
from ui.widgets.size_picker import build_size_picker
from ui.widgets.styles import build_styles

PROMPT_PLACEHOLDER = "a large red circle at the top left on a blue background"

Fields = dict[str, gr.components.Component]


def slider(
    tab: str,
    name: str,
    label: str,
    value: float | None = None,
    *,
    schema: type[BaseModel] = Img2ImgParams,  # a superset of GenerationParams' fields
    **overrides: Any,
) -> gr.Slider:
    """A slider whose range and default come from the parameter schema (the one schema); `value`
    only where the start value is not the schema's (the Settings' default steps, ...)."""
    limits = field_limits(name, schema)
    kwargs: dict[str, Any] = {
        "minimum": limits.get("minimum", 0),
        "maximum": limits.get("maximum", 100),
        "step": limits.get("step", 1),
        "value": limits["default"] if value is None else value,
        "buttons": [],  # no ↺ reset button: A1111's sliders have none and it crowds the label
    }
    kwargs.update(overrides)
    return gr.Slider(label=label, elem_id=f"{tab}_{name}", **kwargs)


def counter_html(used: int, limit: int) -> str:
    """A1111's "used/limit" token count shown in the corner of a prompt box."""
    return f'<span class="token-count" title="tokens used / chunk limit">{used}/{limit}</span>'


@dataclass
class PromptRow:
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    token_counter: gr.HTML
    negative_counter: gr.HTML
    styles_applied: Any  # events after which the prompts changed from code
    networks_picked: Any


def build_prompt_row(engine: EngineLike, tab: str, f: Fields) -> PromptRow:
    """Prompt and negative prompt (with token counters), the action buttons, the styles box, and
    the extra-networks panel under them. Fills f["prompt"], f["negative_prompt"], f["styles"]."""
    with gr.Row(elem_id=f"{tab}_toprow"):  # not equal_height: the styles box must not stretch the prompts
        with gr.Column(scale=6):
            with gr.Group(elem_classes=["prompt-box"]):
                f["prompt"] = gr.Textbox(
                    label="Prompt",
                    lines=3,
                    max_lines=8,
                    placeholder=PROMPT_PLACEHOLDER,
                    elem_id=f"{tab}_prompt",
                    show_label=False,
                )
                token_counter = gr.HTML(
                    counter_html(0, 75), elem_id=f"{tab}_token_counter", elem_classes=["token-counter"]
                )
            with gr.Group(elem_classes=["prompt-box"]):
                f["negative_prompt"] = gr.Textbox(
                    label="Negative prompt",
                    lines=2,
                    max_lines=6,
                    placeholder="Negative prompt",
                    elem_id=f"{tab}_neg_prompt",
                    show_label=False,
                )
                negative_counter = gr.HTML(
                    counter_html(0, 75),
                    elem_id=f"{tab}_negative_token_counter",
                    elem_classes=["token-counter"],
                )
        with gr.Column(scale=1, min_width=240, elem_id=f"{tab}_actions"):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate", size="lg")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", visible=False, min_width=100)
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", visible=False, min_width=100)
            styles = build_styles(engine, f["prompt"], f["negative_prompt"], tab=tab)
            f["styles"] = styles.picker
    picked = build_extra_networks(engine, f["prompt"], tab=tab)
    return PromptRow(generate, interrupt, skip, token_counter, negative_counter, styles.applied, picked)


def build_sampling_controls(engine: EngineLike, tab: str, f: Fields, *, size_controls: bool = True) -> dict:
    """Sampler, schedule, steps, size (with its picker), batch, CFG, seed and the override box.
    Returns the seed buttons (random, reuse) for `wire_generation` and the size picker."""
    settings = engine.settings
    with gr.Row():
        f["sampler_name"] = gr.Dropdown(
            engine.sampler_names(),
            value=settings.default_sampler,
            label="Sampling method",
            elem_id=f"{tab}_sampler",
        )
        f["scheduler"] = gr.Dropdown(
            engine.schedule_names(),
            value=settings.default_scheduler,
            label="Schedule type",
            info=engine.schedule_hint(settings.default_sampler),
            elem_id=f"{tab}_scheduler",
        )
    f["steps"] = slider(tab, "steps", "Sampling steps", settings.default_steps)
    size = engine.default_size()
    with gr.Row():
        with gr.Column(scale=3):
            f["width"] = slider(tab, "width", "Width", size, visible=size_controls)
            f["height"] = slider(tab, "height", "Height", size, visible=size_controls)
            size_picker = build_size_picker(engine, tab, f["width"], f["height"])
        with gr.Column(scale=2, min_width=160):
            f["n_iter"] = slider(tab, "n_iter", "Batch count", maximum=16)
            f["batch_size"] = slider(tab, "batch_size", "Batch size")
    with gr.Row():
        f["cfg_scale"] = slider(tab, "cfg_scale", "CFG Scale", settings.default_cfg_scale)
        # Forge's slider: Flux dev's guidance input (its real CFG stays at 1); other models ignore it
        f["distilled_cfg_scale"] = slider(
            tab, "distilled_cfg_scale", "Distilled CFG Scale", info="Flux dev only: its guidance input"
        )
    with gr.Row(elem_id=f"{tab}_seed_row", equal_height=True):
        f["seed"] = gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{tab}_seed", scale=4)
        random_button = gr.Button("🎲", elem_id=f"{tab}_random_seed", scale=0, min_width=48)
        reuse_button = gr.Button("♻️", elem_id=f"{tab}_reuse_seed", scale=0, min_width=48)
        extra = gr.Checkbox(label="Extra", value=False, elem_id=f"{tab}_subseed_show", scale=0, min_width=80)
    # A1111's variation seed: the noise moves from the seed's towards this seed's by the strength.
    with gr.Row(visible=False, elem_id=f"{tab}_subseed_row") as variation:
        f["subseed"] = gr.Number(
            label="Variation seed", value=-1, precision=0, elem_id=f"{tab}_subseed", scale=4
        )
        f["subseed_strength"] = slider(tab, "subseed_strength", "Variation strength")
    extra.change(
        lambda on: gr.update(visible=on),
        inputs=extra,
        outputs=variation,
        queue=False,
        api_visibility="private",
    )
    # A1111's "Override settings": sampler parameters that came with pasted parameters
    # (PNG Info → Send to ...) apply to this tab's jobs only; remove an entry to fall back to the
    # Sampler settings tab. Hidden while there is nothing to override.
    f["override_settings"] = gr.Dropdown(
        choices=[],
        value=[],
        multiselect=True,
        allow_custom_value=False,
        label="Override settings",
        info="Sampler parameters from the pasted parameters, for these jobs only",
        visible=False,
        elem_id=f"{tab}_override_settings",
    )
    return {"random": random_button, "reuse": reuse_button, "size_picker": size_picker}


@dataclass
class Results:
    progress: gr.HTML
    preview: gr.Image
    gallery: gr.Gallery
    infotext: gr.HTML
    send_buttons: dict[str, gr.Button]


SEND_TARGETS = {"img2img": "📥 img2img", "inpaint": "🎨 inpaint", "extras": "📐 extras"}


def build_results(tab: str, send_targets: tuple[str, ...] = tuple(SEND_TARGETS)) -> Results:
    """Progress bar, live preview, gallery, the "Send to" buttons and the parameters text."""
    progress = gr.HTML("", elem_id=f"{tab}_progress")
    preview = gr.Image(
        label="Preview", visible=False, interactive=False, elem_id=f"{tab}_preview", buttons=[], height=520
    )
    gallery = gr.Gallery(
        label="Output",
        show_label=False,
        elem_id=f"{tab}_gallery",
        columns=4,
        height=520,
        preview=True,
        object_fit="contain",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
    )
    with gr.Row(elem_id=f"{tab}_send_row"):
        send = {
            target: gr.Button(
                SEND_TARGETS[target], size="sm", elem_id=f"{tab}_send_to_{target}", min_width=80
            )
            for target in send_targets
        }
    infotext = gr.HTML("", elem_id=f"{tab}_infotext")
    return Results(progress, preview, gallery, infotext, send)


def to_outputs(update: RunUpdate) -> tuple[Any, ...]:
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


RunFn = Callable[[str, tuple[Any, ...]], Iterator[RunUpdate]]  # (session key, values) -> updates


def wire_generation(
    engine: EngineLike,
    jobs: SessionJobs,
    tab: str,
    f: Fields,
    row: PromptRow,
    results: Results,
    seed_buttons: dict,
    inputs: list[Any],
    run: RunFn,
) -> tuple[gr.State, Callable[[Any], None]]:
    """Connect Generate (and Shift+Enter), Interrupt, Skip, the token counters, the seed buttons
    and the gallery selection. Returns the per-session GenInfo state and `recount_after`."""
    gen_info = gr.State(GenInfo())
    outputs = [
        results.progress,
        results.preview,
        results.gallery,
        results.infotext,
        gen_info,
        row.generate,
        row.interrupt,
        row.skip,
    ]

    # The request comes first: Gradio injects gr.Request by position, and only before *values.
    def on_generate(request: gr.Request, *values: Any) -> Iterator[tuple[Any, ...]]:
        for update in run(f"{tab}:{request.session_hash or ''}", values):
            if update.message:
                gr.Warning(update.message)
            yield to_outputs(update)

    run_events = dict(
        inputs=inputs,
        outputs=outputs,
        show_progress="hidden",
        concurrency_limit=None,  # the engine queues jobs itself; each session just polls its own
        api_visibility="private",
    )
    row.generate.click(on_generate, **run_events)
    # Shift+Enter in the prompt box generates (Gradio submits multi-line boxes on Shift+Enter).
    f["prompt"].submit(on_generate, **run_events)

    def on_interrupt(request: gr.Request) -> None:
        interrupt_job(jobs, f"{tab}:{request.session_hash or ''}")

    def on_skip(request: gr.Request) -> None:
        interrupt_job(jobs, f"{tab}:{request.session_hash or ''}", skip=True)

    row.interrupt.click(on_interrupt, queue=False, api_visibility="private")
    row.skip.click(on_skip, queue=False, api_visibility="private")
    f["sampler_name"].change(
        lambda sampler: gr.Dropdown(info=engine.schedule_hint(sampler)),
        inputs=f["sampler_name"],
        outputs=f["scheduler"],
        queue=False,
        api_visibility="private",
    )
    recount_after = _wire_token_counters(engine, f, row)
    seed_buttons["random"].click(random_seed, outputs=f["seed"], queue=False, api_visibility="private")
    seed_buttons["reuse"].click(
        reuse_seed, inputs=[gen_info, f["seed"]], outputs=f["seed"], queue=False, api_visibility="private"
    )

    def on_select(info: GenInfo, event: gr.SelectData) -> tuple[GenInfo, str]:
        return select_image(info, int(event.index))

    results.gallery.select(
        on_select,
        inputs=gen_info,
        outputs=[gen_info, results.infotext],
        queue=False,
        api_visibility="private",
    )
    return gen_info, recount_after


def _wire_token_counters(engine: EngineLike, f: Fields, row: PromptRow) -> Callable[[Any], None]:
    """Recount as the user types (only the latest keystroke's count is kept) and when the step
    count changes, since prompt editing schedules depend on it."""
    counters = ((f["prompt"], row.token_counter, False), (f["negative_prompt"], row.negative_counter, True))

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
        """Chain a recount after an event that set the prompts from code (a function's output
        does not fire the boxes' change event)."""
        for box, counter, negative in counters:
            event.then(make_recount(negative), inputs=[box, f["steps"]], outputs=counter, **counter_events)

    recount_after(row.styles_applied)
    recount_after(row.networks_picked)
    return recount_after
