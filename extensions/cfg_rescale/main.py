"""CFG rescale, the example extension of docs/extensions.md.

High CFG scales push the guided x̂₀ far outside the spread of what the model predicts on its own,
which burns colours. CFG rescale (Lin et al., "Common Diffusion Noise Schedules and Sample Steps
are Flawed", 2023, eq. 15-16) scales the guided prediction so its standard deviation matches the
conditional prediction's, then blends: x̂₀ = φ · rescaled + (1 − φ) · guided. We apply it to x̂₀,
the quantity our guider combines.

It shows every contribution point: a hook at a generation stage (AFTER_CFG), an accordion whose
values reach the hook for that job, an infotext entry, a Settings entry and an application hook.
(A1111's extension of the same idea writes "CFG Rescale φ"; we write "CFG Rescale".)
"""

from __future__ import annotations

import logging

import torch
from pydantic import Field

from engine.plugins.args import ExtensionArgs
from engine.plugins.hooks import GenerationContext, Stage, StepContext
from engine.schema.params import field_limits

log = logging.getLogger(__name__)
NAME = "cfg-rescale"  # = extension.toml's name: the key of this extension's values in a job
INFOTEXT_KEY = "CFG Rescale"
DEFAULT_MULTIPLIER = 0.7  # the Settings entry's default


def rescale(guided: torch.Tensor, cond: torch.Tensor, multiplier: float) -> torch.Tensor:
    """Per image: guided scaled to cond's standard deviation, blended back by `multiplier`."""
    dims = tuple(range(1, guided.dim()))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return multiplier * guided * ratio + (1 - multiplier) * guided


class CFGRescaleArgs(ExtensionArgs):
    """In the order of the panel (and of A1111 clients' positional args): on/off, then φ."""

    enabled: bool = False
    # None: the Settings entry "CFG rescale: default multiplier".
    multiplier: float | None = Field(None, ge=0.0, le=1.0, json_schema_extra={"step": 0.05})


def multiplier_of(gen: GenerationContext, default: float = DEFAULT_MULTIPLIER) -> float:
    """The job's multiplier; 0 when the accordion is off or the job did not ask for it."""
    if not gen.args.get("enabled"):
        return 0.0
    value = gen.args.get("multiplier")
    return float(default if value is None else value)


def setup(ext) -> None:
    def on_params(gen: GenerationContext) -> None:
        # Once per generation: the setting is read here, not at every model evaluation.
        value = multiplier_of(gen, ext.get_setting("default_multiplier"))
        gen.state.setdefault(NAME, {})["multiplier"] = value
        if value:
            gen.extra_infotext[INFOTEXT_KEY] = value

    def after_cfg(ctx: StepContext) -> None:
        value = ctx.gen.state.get(NAME, {}).get("multiplier", 0.0)
        if value and ctx.uncond is not None:  # CFG scale 1 has nothing to rescale
            ctx.denoised = rescale(ctx.denoised, ctx.cond, value)

    def build_ui() -> dict:
        import gradio as gr

        with gr.Row():
            enabled = gr.Checkbox(label="Enable", value=False, elem_id="cfg_rescale_enabled")
            multiplier = gr.Slider(
                limits["minimum"],
                limits["maximum"],
                value=ext.get_setting("default_multiplier"),
                step=limits["step"],
                label="Rescale multiplier (φ)",
                elem_id="cfg_rescale_multiplier",
            )
        return {"enabled": enabled, "multiplier": multiplier}

    limits = field_limits("multiplier", CFGRescaleArgs)
    ext.on(Stage.PARAMS_RESOLVED, on_params)
    ext.on(Stage.AFTER_CFG, after_cfg)
    ext.on(Stage.APP_STARTED, lambda app: log.info("cfg-rescale ready"))
    ext.accordion("CFG rescale", build_ui, args=CFGRescaleArgs)
    ext.setting(
        "default_multiplier",
        DEFAULT_MULTIPLIER,
        "CFG rescale: default multiplier",
        minimum=limits["minimum"],
        maximum=limits["maximum"],
        step=limits["step"],
    )
