"""Where the pipelines fire the extension stages (engine.plugins.hooks). Kept apart from the stage code so
each pipeline reads as its numbered stages with one call per hook point.

The job carries the hooks (`job.hooks`, a HookRunner) and the current GenerationContext
(`job.context`), so helpers deep in the loop reach them without new parameters. A stage without
callbacks costs nothing: guidance hooks are only installed when an extension asked for them, so a
run without extensions stays bit-identical to one before hooks existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from engine.plugins.hooks import (
    DecodeContext,
    GenerationContext,
    HookRunner,
    ImageContext,
    PromptContext,
    SamplingContext,
    Stage,
    StepContext,
)
from engine.sampling.denoiser import GuidanceHooks, step_of

if TYPE_CHECKING:
    from engine.models.types import LoadedModel
    from engine.schema.params import GenerationParams
    from engine.service.jobs import Job


def runner(job: Job | None) -> HookRunner:
    return job.hooks if job is not None and job.hooks is not None else HookRunner.none()


def context(job: Job | None) -> GenerationContext | None:
    return job.context if job is not None else None


def begin(
    job: Job, kind: str, params: GenerationParams, model: LoadedModel, notes: list[str]
) -> GenerationParams:
    """Start a job's GenerationContext and fire PARAMS_RESOLVED; returns the params to use (an
    extension may have replaced them). The context shares the result's notes."""
    gen = GenerationContext(kind=kind, params=params, model=model, notes=notes)
    job.context = gen
    runner(job).run(Stage.PARAMS_RESOLVED, gen)
    if not isinstance(gen.params, type(params)):
        raise ValueError(f"an extension replaced the parameters with a {type(gen.params).__name__}")
    return gen.params


def set_pass(job: Job, name: str) -> None:
    gen = context(job)
    if gen is not None:
        gen.pass_name = name


def encode(job: Job | None, prompt: str, negative_prompt: str, encode_fn: Callable[[str, str], Any]) -> Any:
    """BEFORE_ENCODE (prompts may change) → `encode_fn(prompt, negative)` → AFTER_ENCODE."""
    gen, hooks = context(job), runner(job)
    if gen is None:
        return encode_fn(prompt, negative_prompt)
    ctx = hooks.run(Stage.BEFORE_ENCODE, PromptContext(gen, prompt, negative_prompt))
    ctx.conditioning = encode_fn(ctx.prompt, ctx.negative_prompt)
    hooks.run(Stage.AFTER_ENCODE, ctx)
    return ctx.conditioning


def before_sampling(
    job: Any, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]
) -> SamplingContext | None:
    gen = context(job)
    if gen is None:
        return None
    return runner(job).run(Stage.BEFORE_SAMPLING, SamplingContext(gen, x, sigmas, list(seeds)))


def after_sampling(job: Job | None, ctx: SamplingContext | None, latents: torch.Tensor) -> torch.Tensor:
    if ctx is None:
        return latents
    ctx.latents = latents
    return runner(job).run(Stage.AFTER_SAMPLING, ctx).latents


def guidance(job: Job | None, base: GuidanceHooks | None, sigmas: torch.Tensor) -> GuidanceHooks | None:
    """`base` (e.g. inpainting's blend) plus BEFORE_MODEL_CALL / AFTER_CFG when extensions want them."""
    gen, hooks = context(job), runner(job)
    wants_model = gen is not None and hooks.has(Stage.BEFORE_MODEL_CALL)
    wants_cfg = gen is not None and hooks.has(Stage.AFTER_CFG)
    if not (wants_model or wants_cfg):
        return base
    combined = GuidanceHooks(
        pre_model=list(base.pre_model) if base else [],
        pre_cfg=list(base.pre_cfg) if base else [],
        after_cfg=list(base.after_cfg) if base else [],
        post_cfg=list(base.post_cfg) if base else [],
    )
    table = sigmas.detach().float().cpu()
    steps = len(table) - 1

    def step_and_sigma(sigma: torch.Tensor) -> tuple[int, float]:
        return step_of(table, sigma), float(sigma.reshape(-1)[0])

    if wants_model:

        def before_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            step, s = step_and_sigma(sigma)
            return hooks.run(Stage.BEFORE_MODEL_CALL, StepContext(gen, step, steps, s, x)).x

        combined.pre_model.insert(0, before_model)
    if wants_cfg:

        def after_cfg(x, sigma, guided, uncond, cond):
            step, s = step_and_sigma(sigma)
            ctx = StepContext(gen, step, steps, s, x, uncond=uncond, cond=cond, denoised=guided)
            return hooks.run(Stage.AFTER_CFG, ctx).denoised

        combined.after_cfg.insert(0, after_cfg)
    return combined


def step_end(job: Job | None, info: Any, preview: Any) -> None:
    gen, hooks = context(job), runner(job)
    if gen is not None and hooks.has(Stage.STEP_END):
        ctx = StepContext(
            gen, info.step, info.total, info.sigma, info.x, denoised=info.denoised, preview=preview
        )
        hooks.run(Stage.STEP_END, ctx)


def after_decode(job: Job | None, latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    gen = context(job)
    if gen is None:
        return images
    return runner(job).run(Stage.AFTER_DECODE, DecodeContext(gen, latents, images)).images


def extra_infotext(job: Job | None) -> dict[str, Any]:
    gen = context(job)
    return dict(gen.extra_infotext) if gen is not None else {}


def finish_image(
    job: Any, index: int, seed: int, image: Any, infotext: Callable[[dict[str, Any]], str], save: Callable
) -> tuple[Any, str, Any]:
    """POSTPROCESS_IMAGE → infotext (with the extensions' entries) → BEFORE_SAVE → `save(image,
    infotext)` → AFTER_SAVE. Returns (image, infotext, path)."""
    gen, hooks = context(job), runner(job)
    if gen is None:
        text = infotext({})
        return image, text, save(image, text)
    ctx = hooks.run(Stage.POSTPROCESS_IMAGE, ImageContext(gen, index, seed, image))
    ctx.infotext = infotext(dict(gen.extra_infotext))
    hooks.run(Stage.BEFORE_SAVE, ctx)
    ctx.path = save(ctx.image, ctx.infotext)
    hooks.run(Stage.AFTER_SAVE, ctx)
    return ctx.image, ctx.infotext, ctx.path
