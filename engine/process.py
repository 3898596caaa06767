"""The txt2img stage pipeline (docs/design.md, example 7):

    check_inputs → encode_prompt → prepare_latents → denoise → decode → postprocess → save

Each stage is a small named function; `txt2img` reads as the numbered list of them. The denoising
loop is ours (a σ-space sampler from `engine.sampling`), not a diffusers pipeline `__call__`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from engine import images as image_io
from engine import pipeline_hooks as stage_hooks
from engine.conditioning.clip import clip_layers
from engine.conditioning.embeddings import EmbeddingDatabase
from engine.conditioning.schedule import Conditioning, encode_conditioning
from engine.controlnet.apply import (
    ControlNetStack,
    PreparedUnit,
    control_infotext,
    control_stack,
    first_pass_units,
    hires_units,
    prepare_units,
)
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput
from engine.infotext import build_infotext
from engine.jobs import Job, JobInterrupted, JobSkipped
from engine.latents import (  # noqa: F401 - re-exported: callers use process.decode / process.encode
    decode,
    decode_with_hooks,
    encode,
    inpaint_conditioning,
    to_pil,
    txt2img_conditioning,
)
from engine.models import lora as lora_patch
from engine.models.lora import LoraFile, LoraLibrary, LoraRequest, extract_lora_tags
from engine.models.types import LoadedModel
from engine.params import GenerationParams
from engine.results import GenerationResult
from engine.rng import ImageRNG, resolve_seeds
from engine.sampler_params import sampler_options
from engine.sampling.denoiser import CFGGuider, GuidanceHooks, SigmaDenoiser
from engine.sampling.registry import SAMPLERS
from engine.sampling.samplers import SamplerOptions, StepInfo
from engine.sampling.schedules import ModelSigmas, build_sigmas
from engine.upscale.upscalers import UpscalerLibrary


@dataclass(frozen=True)
class SaveOptions:
    outdir: Path  # e.g. outputs/txt2img-images; a YYYY-MM-DD folder is made inside


# -- 1. check inputs ------------------------------------------------------------------------------
def check_inputs(model: LoadedModel, params: GenerationParams) -> None:
    """What the schema cannot know: constraints that depend on the loaded model."""
    factor = model.vae_scale_factor
    if params.width % factor or params.height % factor:
        raise ValueError(f"width and height must be multiples of {factor} for this model")
    if params.sampler_name not in SAMPLERS:
        raise ValueError(f"unknown sampler {params.sampler_name!r}")
    layers = clip_layers(model.text_encoder)
    if (params.CLIP_stop_at_last_layers or 1) > layers:
        raise ValueError(
            f"Clip skip {params.CLIP_stop_at_last_layers} exceeds this model's {layers} CLIP layers"
        )


# -- 2. encode prompt -----------------------------------------------------------------------------
def encode_prompt(
    model: LoadedModel, params: GenerationParams, embeddings: EmbeddingDatabase | None = None
) -> Conditioning:
    """Every text the prompt and negative prompt take over the run (editing, alternation, AND),
    with textual-inversion `embeddings` used where their names appear."""
    conditioning = encode_conditioning(
        model.tokenizer,
        model.text_encoder,
        params.prompt,
        params.negative_prompt,
        params.steps,
        model.device,
        emphasis=params.emphasis or "Original",
        clip_skip=params.CLIP_stop_at_last_layers or 1,
        embeddings=embeddings,
    )
    return conditioning.to(model.dtype)


# -- 3. prepare latents ---------------------------------------------------------------------------
def make_sigmas(
    model: LoadedModel, params: GenerationParams, options: SamplerOptions | None = None
) -> torch.Tensor:
    return build_sigmas(
        params.sampler_name,
        params.scheduler,
        params.steps,
        ModelSigmas.from_alphas_cumprod(model.alphas_cumprod),
        options,
        is_sdxl=model.family == "sdxl",
    )


def prepare_latents(model: LoadedModel, params: GenerationParams, seeds: list[int], sigma_max: float):
    """Initial noise x_T = σ_max · N(0, I), one seeded CPU generator per image."""
    f = model.vae_scale_factor
    shape = (model.latent_channels, params.height // f, params.width // f)
    rng = ImageRNG.for_params(params, seeds, shape, model.device)
    return rng.next() * sigma_max, rng


# -- 4. denoise -----------------------------------------------------------------------------------
def make_denoiser(
    model: LoadedModel, image_cond: torch.Tensor | None = None, control: ControlNetStack | None = None
) -> SigmaDenoiser:
    """`image_cond`: an inpainting UNet's extra input channels (mask + masked-image latents),
    one row per image; the CFG batch repeats the images, so the rows are tiled to match.
    `control`: ControlNet residuals added to the UNet's skip connections at every evaluation."""

    def unet(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond_count: int = 0) -> torch.Tensor:
        kwargs = {}
        residuals = control(x, t, cond, uncond_count) if control is not None else None
        if residuals is not None:
            down, mid = residuals
            kwargs["down_block_additional_residuals"] = [r.to(model.dtype) for r in down]
            kwargs["mid_block_additional_residual"] = mid.to(model.dtype)
        if image_cond is not None:
            extra = image_cond.to(x).repeat(x.shape[0] // image_cond.shape[0], 1, 1, 1)
            x = torch.cat([x, extra], dim=1)
        return model.unet(x.to(model.dtype), t, encoder_hidden_states=cond, **kwargs).sample.float()

    sigmas = ModelSigmas.from_alphas_cumprod(model.alphas_cumprod)
    return SigmaDenoiser(unet, sigmas, model.prediction_type, wants_uncond_count=control is not None)


def denoise(
    model,
    params,
    x,
    sigmas,
    conditioning: Conditioning,
    rng: ImageRNG,
    job: Job,
    options: SamplerOptions | None = None,
    *,
    hooks: GuidanceHooks | None = None,
    image_cond: torch.Tensor | None = None,
    control: ControlNetStack | None = None,
) -> torch.Tensor:
    """Run the sampler. On interrupt/skip, returns the latest x̂₀ estimate (A1111's behaviour).
    `rng` is the sampler's noise source: fresh per-image noise, and Brownian paths for SDE samplers.
    `hooks` reach into guidance (inpainting blends the kept latents there); `image_cond` feeds an
    inpainting UNet."""
    options = options or SamplerOptions()
    rng.apply_noise_seed_delta(options.eta_noise_seed_delta)
    if model.is_inpainting and image_cond is None:
        raise ValueError("an inpainting model needs image conditioning")
    sampling = stage_hooks.before_sampling(job, x, sigmas, rng.seeds)
    if sampling is not None:
        x, sigmas = sampling.latents, sampling.sigmas
    denoiser = make_denoiser(model, image_cond, control)
    hooks = stage_hooks.guidance(job, hooks, sigmas)
    guider = CFGGuider(
        denoiser,
        conditioning,
        params.cfg_scale,
        sigmas=sigmas,
        hooks=hooks,
        skip_early_cond=options.skip_early_cond,
        s_min_uncond=options.s_min_uncond,
        s_min_uncond_all=options.s_min_uncond_all,
    )
    last = {"denoised": x}

    def on_step(info: StepInfo) -> None:
        last["denoised"] = info.denoised
        job.step_done()
        preview = None
        if job.wants_preview(info.step):
            job.preview = preview = to_pil(decode(model, info.denoised[:1]))[0]
            job.preview_step = info.step
        stage_hooks.step_end(job, info, preview)
        job.check()

    spec = SAMPLERS[params.sampler_name]
    try:
        job.check()
        latents = spec.fn(guider, x, sigmas.to(x.device), noise=rng, callback=on_step, options=options)
    except (JobInterrupted, JobSkipped):
        raise _Stopped(last["denoised"]) from None
    return stage_hooks.after_sampling(job, sampling, latents)


class _Stopped(Exception):
    def __init__(self, latents: torch.Tensor):
        self.latents = latents


# -- 5. decode, 6. postprocess: engine.latents (decode, encode, to_pil, inpaint conditioning) --------


# -- the pipeline ---------------------------------------------------------------------------------
def encode_with_hooks(
    model: LoadedModel, params: GenerationParams, embeddings: EmbeddingDatabase | None, job: Job | None
) -> Conditioning:
    def encode_texts(prompt: str, negative: str) -> Conditioning:
        update = {"prompt": prompt, "negative_prompt": negative}
        return encode_prompt(model, params.model_copy(update=update), embeddings)

    return stage_hooks.encode(job, params.prompt, params.negative_prompt, encode_texts)


def resolve_loras(
    params: GenerationParams, library: LoraLibrary | None, notes: list[str]
) -> tuple[GenerationParams, list[tuple[LoraFile, LoraRequest]]]:
    """(params whose prompts no longer hold <lora:...> tags, the LoRAs they asked for). A name
    that is not in models/Lora is noted and skipped, as A1111 does, so pasted prompts still run."""
    prompt, requests = extract_lora_tags(params.prompt)
    negative, negative_requests = extract_lora_tags(params.negative_prompt)
    found = []
    for request in requests + negative_requests:
        lora = library.get(request.name) if library is not None else None
        if lora is None:
            notes.append(f"LoRA not found: {request.name}")
        else:
            found.append((lora, request))
    return params.model_copy(update={"prompt": prompt, "negative_prompt": negative}), found


@contextlib.contextmanager
def text_conditioning(
    model: LoadedModel,
    params: GenerationParams,
    result: GenerationResult,
    embeddings: EmbeddingDatabase | None,
    loras: LoraLibrary | None,
    job: Job | None = None,
) -> Iterator[tuple[Conditioning, dict[str, object]]]:
    """Stage 2 for every kind of job: (the encoded prompts, the infotext extras they bring).
    The LoRAs are merged for the whole block and the model's own weights restored after it.
    Extensions see the prompts (BEFORE_ENCODE / AFTER_ENCODE) without their <lora:…> tags."""
    text_params, lora_list = resolve_loras(params, loras, result.notes)
    extra: dict[str, object] = {}
    if lora_list:  # A1111: Lora hashes: "name: hash, ..."
        extra["Lora hashes"] = ", ".join(f"{lora.name}: {lora.short_hash}" for lora, _ in lora_list)
    with lora_patch.applied(model, lora_list, result.notes):
        conditioning = encode_with_hooks(model, text_params, embeddings, job)  # once for every image
        if conditioning.embeddings_used:  # A1111: TI hashes: "name: hash, ..."
            extra["TI hashes"] = ", ".join(f"{name}: {h}" for name, h in conditioning.embeddings_used)
        yield conditioning, extra


@torch.no_grad()  # sampling needs no autograd graph
def txt2img(
    model: LoadedModel,
    params: GenerationParams,
    *,
    job: Job | None = None,
    save: SaveOptions | None = None,
    embeddings: EmbeddingDatabase | None = None,
    loras: LoraLibrary | None = None,
    control: list[ControlInput] | None = None,
    controlnets: ControlNetLibrary | None = None,
    upscalers: UpscalerLibrary | None = None,
) -> GenerationResult:
    from engine import hires

    job = job or Job()
    check_inputs(model, params)  # 1
    if params.enable_hr and params.hr_upscaler not in hires.LATENT_MODES:
        if upscalers is None or params.hr_upscaler not in upscalers.names():
            raise ValueError(f"unknown hires upscaler {params.hr_upscaler!r}")
    units = _prepare_control(model, params, control, controlnets)
    params = resolve_seeds(params)
    result = GenerationResult(params=params)
    resolved = stage_hooks.begin(job, "txt2img", params, model, result.notes)
    if resolved is not params:  # an extension changed the job: check it again
        check_inputs(model, resolved)
        params = result.params = resolved
    job.begin(params.n_iter, params.steps + (hires.steps_run(model, params) if params.enable_hr else 0))
    with text_conditioning(model, params, result, embeddings, loras, job) as (conditioning, extra):  # 2
        extra.update(control_infotext(units))
        second = None
        if params.enable_hr:  # the second pass's prompts (and step count, for prompt editing)
            hr = hires.second_pass_params(params)
            update = {"prompt": extract_lora_tags(params.hr_prompt or params.prompt)[0], "steps": hr.steps}
            update["negative_prompt"] = extract_lora_tags(
                params.hr_negative_prompt or params.negative_prompt
            )[0]
            stage_hooks.set_pass(job, "hires")
            hires_conditioning = encode_with_hooks(model, params.model_copy(update=update), embeddings, job)
            stage_hooks.set_pass(job, "first")
            second = functools.partial(
                hires.hires_pass,
                conditioning=hires_conditioning,
                upscalers=upscalers,
                units=hires_units(units, *hires.target_size(params), controlnets.annotators) if units else [],
            )
        first = first_pass_units(units, hires=params.enable_hr)
        _sample_batches(model, params, conditioning, job, save, result, extra, first, second)
    return result


def _prepare_control(model, params, control, controlnets, fallback_image=None) -> list[PreparedUnit]:
    if not control:
        return []
    if controlnets is None:
        raise ValueError("ControlNet units were given but no ControlNet folder is configured")
    return prepare_units(control, model, controlnets, params.width, params.height, fallback_image)


def emit_image(
    result: GenerationResult,
    image: Image.Image,
    infotext: str | Callable[[dict[str, object]], str],
    seed: int,
    save: SaveOptions | None,
    job: Job | None = None,
) -> None:
    """Stage 7: the per-picture extension stages, save (when asked), add one picture to the
    result. `infotext`: the text, or a function making it from the extensions' entries."""

    def write(picture: Image.Image, text: str) -> Path | None:
        return image_io.save_image(picture, save.outdir, seed=seed, infotext=text) if save else None

    make = infotext if callable(infotext) else (lambda _entries: infotext)
    image, infotext, path = stage_hooks.finish_image(job, len(result.images), seed, image, make, write)
    result.images.append(image)
    result.infotexts.append(infotext)
    result.seeds.append(seed)
    result.paths.append(path)


def _sample_batches(
    model: LoadedModel,
    params: GenerationParams,
    conditioning: Conditioning,
    job: Job,
    save: SaveOptions | None,
    result: GenerationResult,
    extra: dict[str, object],
    units: list[PreparedUnit] | None = None,
    second_pass=None,
) -> None:
    options = sampler_options(params)  # the job's sampler parameters (A1111 defaults where unset)
    sigmas = make_sigmas(model, params, options)
    control = control_stack(model, units or [], sigmas)
    for batch in range(params.n_iter):
        job.progress.batch = batch
        seeds = [params.seed + batch * params.batch_size + i for i in range(params.batch_size)]
        x, rng = prepare_latents(model, params, seeds, float(sigmas[0]))  # 3
        image_cond = txt2img_conditioning(model, len(seeds), params.height, params.width)
        try:
            latents = denoise(
                model,
                params,
                x,
                sigmas,
                conditioning,
                rng,
                job,
                options,
                image_cond=image_cond,
                control=control,
            )  # 4
        except _Stopped as stopped:
            latents, result.interrupted = stopped.latents, True
        if second_pass is not None and not result.interrupted:  # hires fix
            stage_hooks.set_pass(job, "hires")
            try:
                latents = second_pass(model, params, latents, seeds, job=job)
            except _Stopped as stopped:
                latents, result.interrupted = stopped.latents, True
            stage_hooks.set_pass(job, "first")
        pictures = to_pil(decode_with_hooks(model, latents, result.notes, job))  # 5, 6
        for i, (image, seed) in enumerate(zip(pictures, seeds, strict=True)):
            infotext = functools.partial(
                build_infotext,
                params,  # the prompts as written, <lora:...> tags included (A1111 keeps them)
                seed=seed,
                model_name=model.info.name,
                model_hash=model.short_hash,
                batch_pos=i if params.batch_size > 1 else None,
            )
            emit_image(
                result,
                image,
                lambda entries, text=infotext: text(extra={**extra, **entries}),
                seed,
                save,
                job,
            )  # 7
        if job.interrupted:
            break
