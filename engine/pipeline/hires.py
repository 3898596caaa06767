"""Hires fix (A1111): txt2img at the base size, then an img2img-like second pass at the larger size.

The first pass's latents are enlarged by the hires upscaler — in latent space for the `Latent …`
modes, else decoded, upscaled as a picture (Lanczos, Nearest, or a model from models/ESRGAN, ...)
and encoded again — then noised to the σ the denoising strength selects and denoised with the hires
steps (0: the first pass's), sampler, schedule type and prompts. Fresh noise comes from the same
seeds, as in A1111.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.conditioning.schedule import Conditioning
from engine.controlnet.apply import PreparedUnit, control_stack
from engine.models.types import LoadedModel
from engine.pipeline import stages
from engine.pipeline.latents import decode, encode, to_pil, to_tensor, txt2img_conditioning
from engine.pipeline.rng import ImageRNG
from engine.sampling.registry import SAMPLERS
from engine.schema.params import SAME_AS_FIRST_PASS, GenerationParams
from engine.schema.sampler_params import sampler_options
from engine.service.jobs import Job
from engine.upscale.upscalers import LATENT_MODES, UpscalerLibrary


def target_size(params: GenerationParams) -> tuple[int, int]:
    """(width, height) of the second pass: "Hires resize" when set (one side 0: from the aspect
    ratio), else the base size × "Hires upscale"; multiples of 8."""
    w, h = params.hr_resize_x, params.hr_resize_y
    if w or h:
        w = w or round(h * params.width / params.height)
        h = h or round(w * params.height / params.width)
    else:
        w, h = params.width * params.hr_scale, params.height * params.hr_scale
    return max(64, int(w) // 8 * 8), max(64, int(h) // 8 * 8)


def second_pass_params(params: GenerationParams) -> GenerationParams:
    """The settings the second pass samples with."""
    width, height = target_size(params)
    update: dict[str, object] = {"width": width, "height": height}
    if params.hr_second_pass_steps:
        update["steps"] = params.hr_second_pass_steps
    if params.hr_sampler_name not in SAME_AS_FIRST_PASS:
        update["sampler_name"] = params.hr_sampler_name
    if params.hr_scheduler not in SAME_AS_FIRST_PASS:
        update["scheduler"] = params.hr_scheduler
    return params.model_copy(update=update)


def hires_sigmas(model: LoadedModel, hr: GenerationParams) -> torch.Tensor:
    """The tail of the hires schedule the denoising strength selects (img2img's rule)."""
    return stages.strength_tail(model, hr, hr.denoising_strength, sampler_options(hr))


def steps_run(model: LoadedModel, params: GenerationParams) -> int:
    return len(hires_sigmas(model, second_pass_params(params))) - 1


def upscale_latents(
    model: LoadedModel, latents: torch.Tensor, params: GenerationParams, upscalers: UpscalerLibrary | None
) -> torch.Tensor:
    width, height = target_size(params)
    f = model.vae_scale_factor
    if params.hr_upscaler in LATENT_MODES:
        mode, antialias = LATENT_MODES[params.hr_upscaler]
        kwargs = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(latents, size=(height // f, width // f), mode=mode, **kwargs)
    if upscalers is None:
        raise ValueError(f"hires upscaler {params.hr_upscaler!r} needs the upscaler library")
    pictures = to_pil(decode(model, latents))
    scale = max(width / params.width, height / params.height)
    big = [upscalers.upscale(p, scale, params.hr_upscaler).resize((width, height)) for p in pictures]
    return encode(model, to_tensor(big, model.device))


def hires_pass(
    model: LoadedModel,
    params: GenerationParams,
    latents: torch.Tensor,
    seeds: list[int],
    conditioning: Conditioning,
    job: Job,
    upscalers: UpscalerLibrary | None,
    units: list[PreparedUnit] | None = None,
) -> torch.Tensor:
    """The second pass over the first pass's latents; returns the final latents. `units`: the
    ControlNet units of this pass, their maps at the hires size (`apply.hires_units`)."""
    hr = second_pass_params(params)
    if hr.sampler_name not in SAMPLERS:
        raise ValueError(f"unknown hires sampler {hr.sampler_name!r}")
    init = upscale_latents(model, latents, params, upscalers)
    sigmas = hires_sigmas(model, hr)
    rng = ImageRNG.for_params(params, seeds, tuple(init.shape[1:]), model.device)
    x = model.model_sigmas().space.noised(init, rng.next(), sigmas[0])
    image_cond = txt2img_conditioning(model, len(seeds), hr.height, hr.width)
    control = control_stack(model, units or [], sigmas)
    return stages.denoise(
        model,
        hr,
        x,
        sigmas,
        conditioning,
        rng,
        job,
        sampler_options(hr),
        image_cond=image_cond,
        control=control,
    )
