"""txt2img as its numbered stages (docs/design.md, example 7), with the hires fix's second pass:

check_inputs → encode_prompt → prepare_latents → denoise → [hires pass] → decode → save
"""

from __future__ import annotations

import functools

import torch

from engine.conditioning.embeddings import EmbeddingDatabase
from engine.conditioning.schedule import Conditioning
from engine.controlnet.apply import (
    PreparedUnit,
    control_infotext,
    control_stack,
    first_pass_units,
    hires_units,
)
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput
from engine.models.lora import LoraLibrary, extract_lora_tags
from engine.models.types import LoadedModel
from engine.pipeline import hires, stages
from engine.pipeline.latents import decode_with_hooks, to_pil, txt2img_conditioning
from engine.pipeline.refiner import Refiner
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seeds
from engine.plugins import firing as stage_hooks
from engine.schema.infotext import build_infotext
from engine.schema.params import GenerationParams
from engine.schema.sampler_params import sampler_options
from engine.service.jobs import Job
from engine.upscale.upscalers import UpscalerLibrary


@torch.no_grad()  # no autograd graph (not inference_mode: modules loaded or moved during a job would
# then hold inference tensors, which training and any later autograd use cannot take)
def txt2img(
    model: LoadedModel,
    params: GenerationParams,
    *,
    job: Job | None = None,
    save: stages.SaveOptions | None = None,
    embeddings: EmbeddingDatabase | None = None,
    loras: LoraLibrary | None = None,
    control: list[ControlInput] | None = None,
    controlnets: ControlNetLibrary | None = None,
    upscalers: UpscalerLibrary | None = None,
    refiner: LoadedModel | None = None,
) -> GenerationResult:
    """Pictures from the prompt: `params.n_iter` batches of `params.batch_size` images, each from
    its own seed, with the hires fix's second pass when `params.enable_hr`. `refiner`: the loaded
    `params.refiner_checkpoint`, which continues the sampling (and runs the hires pass, as in A1111)."""
    job = job or Job()
    stages.check_inputs(model, params)  # 1
    if params.enable_hr and params.hr_upscaler not in hires.LATENT_MODES:
        if upscalers is None or params.hr_upscaler not in upscalers.names():
            raise ValueError(f"unknown hires upscaler {params.hr_upscaler!r}")
    units = stages.prepare_control(model, params, control, controlnets)
    params = resolve_seeds(params)
    result = GenerationResult(params=params)
    resolved = stage_hooks.begin(job, "txt2img", params, model, result.notes)
    if resolved is not params:  # an extension changed the job: check it again
        stages.check_inputs(model, resolved)
        params = result.params = resolved
    job.begin(params.n_iter, params.steps + (hires.steps_run(model, params) if params.enable_hr else 0))
    with stages.text_conditioning(model, params, result, embeddings, loras, job) as (
        conditioning,
        extra,
    ):  # 2
        extra.update(control_infotext(units))
        plan = stages.refiner_plan(model, params, refiner, embeddings, job)
        if plan is not None:
            extra.update(plan.infotext())
        second = None
        if params.enable_hr:  # the second pass's prompts (and step count, for prompt editing)
            hr = hires.second_pass_params(params)
            update = {"prompt": extract_lora_tags(params.hr_prompt or params.prompt)[0], "steps": hr.steps}
            update["negative_prompt"] = extract_lora_tags(
                params.hr_negative_prompt or params.negative_prompt
            )[0]
            stage_hooks.set_pass(job, "hires")
            hires_model = plan.model if plan is not None else model  # A1111 stays on the refiner
            hires_conditioning = stages.encode_with_hooks(
                hires_model, params.model_copy(update=update), embeddings, job
            )
            stage_hooks.set_pass(job, "first")
            hires_control = units and plan is None  # the base's ControlNets do not fit the refiner
            second = functools.partial(
                hires.hires_pass,
                conditioning=hires_conditioning,
                upscalers=upscalers,
                units=hires_units(units, *hires.target_size(params), controlnets.annotators)
                if hires_control
                else [],
            )
        first = first_pass_units(units, hires=params.enable_hr)
        sample_batches(model, params, conditioning, job, save, result, extra, first, second, plan)
    return result


def sample_batches(
    model: LoadedModel,
    params: GenerationParams,
    conditioning: Conditioning,
    job: Job,
    save: stages.SaveOptions | None,
    result: GenerationResult,
    extra: dict[str, object],
    units: list[PreparedUnit] | None = None,
    second_pass=None,
    refiner: Refiner | None = None,
) -> None:
    """Stages 3-7 for every batch of a txt2img job (`second_pass`: the hires pass, or None;
    `refiner`: the model that takes over the sampling, then runs the hires pass and decodes)."""

    def last() -> LoadedModel:
        return refiner.last_model(model) if refiner is not None else model

    options = sampler_options(params)  # the job's sampler parameters (A1111 defaults where unset)
    sigmas = stages.make_sigmas(model, params, options)
    control = control_stack(model, units or [], sigmas)
    for batch in range(params.n_iter):
        job.progress.batch = batch
        seeds = stages.batch_seeds(params, batch)
        x, rng = stages.prepare_latents(model, params, seeds, float(sigmas[0]))  # 3
        image_cond = txt2img_conditioning(model, len(seeds), params.height, params.width)
        # 4
        latents = stages.until_stopped(
            result, stages.denoise, model, params, x, sigmas, conditioning, rng, job, options,
            image_cond=image_cond, control=control, refiner=refiner,
        )  # fmt: skip
        if second_pass is not None and not result.interrupted:  # hires fix
            stage_hooks.set_pass(job, "hires")
            latents = stages.until_stopped(result, second_pass, last(), params, latents, seeds, job=job)
            stage_hooks.set_pass(job, "first")
        pictures = to_pil(decode_with_hooks(last(), latents, result.notes, job))  # 5, 6
        for i, (image, seed) in enumerate(zip(pictures, seeds, strict=True)):
            infotext = functools.partial(
                build_infotext,
                params,  # the prompts as written, <lora:...> tags included (A1111 keeps them)
                seed=seed,
                model_name=model.info.name,
                model_hash=model.short_hash,
                batch_pos=i if params.batch_size > 1 else None,
            )
            stages.emit_image(
                result,
                image,
                lambda entries, text=infotext: text(extra={**extra, **entries}),
                seed,
                save,
                job,
            )  # 7
        if job.interrupted:
            break
