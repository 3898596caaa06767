"""The txt2img stage pipeline (DESIGN.md, example 7):

    check_inputs → encode_prompt → prepare_latents → denoise → decode → postprocess → save

Each stage is a small named function; `txt2img` reads as the numbered list of them. The denoising
loop is ours (a σ-space sampler from `engine.sampling`), not a diffusers pipeline `__call__`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine import images as image_io
from engine.conditioning.clip import clip_layers
from engine.conditioning.embeddings import EmbeddingDatabase
from engine.conditioning.schedule import Conditioning, encode_conditioning
from engine.infotext import build_infotext
from engine.jobs import Job, JobInterrupted, JobSkipped
from engine.models import lora as lora_patch
from engine.models.lora import LoraFile, LoraLibrary, LoraRequest, extract_lora_tags
from engine.models.types import LoadedModel
from engine.params import GenerationParams
from engine.results import GenerationResult
from engine.rng import ImageRNG, resolve_seed
from engine.sampler_params import sampler_options
from engine.sampling.denoiser import CFGGuider, SigmaDenoiser
from engine.sampling.registry import SAMPLERS
from engine.sampling.samplers import SamplerOptions, StepInfo
from engine.sampling.schedules import ModelSigmas, build_sigmas


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
    rng = ImageRNG(seeds, shape, model.device)
    return rng.next() * sigma_max, rng


# -- 4. denoise -----------------------------------------------------------------------------------
def make_denoiser(model: LoadedModel) -> SigmaDenoiser:
    def unet(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return model.unet(x.to(model.dtype), t, encoder_hidden_states=cond).sample.float()

    sigmas = ModelSigmas.from_alphas_cumprod(model.alphas_cumprod)
    return SigmaDenoiser(unet, sigmas, model.prediction_type)


def denoise(
    model,
    params,
    x,
    sigmas,
    conditioning: Conditioning,
    rng: ImageRNG,
    job: Job,
    options: SamplerOptions | None = None,
) -> torch.Tensor:
    """Run the sampler. On interrupt/skip, returns the latest x̂₀ estimate (A1111's behaviour).
    `rng` is the sampler's noise source: fresh per-image noise, and Brownian paths for SDE samplers."""
    options = options or SamplerOptions()
    rng.apply_noise_seed_delta(options.eta_noise_seed_delta)
    guider = CFGGuider(make_denoiser(model), conditioning, params.cfg_scale, sigmas=sigmas)
    last = {"denoised": x}

    def on_step(info: StepInfo) -> None:
        last["denoised"] = info.denoised
        job.step_done()
        if job.wants_preview(info.step):
            job.preview = to_pil(decode(model, info.denoised[:1]))[0]
            job.preview_step = info.step
        job.check()

    spec = SAMPLERS[params.sampler_name]
    try:
        job.check()
        return spec.fn(guider, x, sigmas.to(x.device), noise=rng, callback=on_step, options=options)
    except (JobInterrupted, JobSkipped):
        raise _Stopped(last["denoised"]) from None


class _Stopped(Exception):
    def __init__(self, latents: torch.Tensor):
        self.latents = latents


# -- 5. decode ------------------------------------------------------------------------------------
def decode(model: LoadedModel, latents: torch.Tensor, notes: list[str] | None = None) -> torch.Tensor:
    """Latents → images in [0, 1]. A half-precision VAE that yields NaN (SD's 'black image'
    problem) is switched to fp32 for good and the batch is decoded again."""
    vae = model.vae
    z = latents / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    images = vae.decode(z.to(model.vae_dtype)).sample
    if not torch.isfinite(images).all() and model.vae_dtype != torch.float32:
        # nn.Module.to, not ModelMixin.to: the latter logs a warning on every dtype cast.
        torch.nn.Module.to(model.vae, torch.float32)
        model.vae_dtype = torch.float32
        if notes is not None:
            notes.append("VAE produced NaN in half precision; switched the VAE to fp32")
        images = model.vae.decode(z.float()).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


# -- 6. postprocess -------------------------------------------------------------------------------
def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


# -- the pipeline ---------------------------------------------------------------------------------
@torch.inference_mode()
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


def txt2img(
    model: LoadedModel,
    params: GenerationParams,
    *,
    job: Job | None = None,
    save: SaveOptions | None = None,
    embeddings: EmbeddingDatabase | None = None,
    loras: LoraLibrary | None = None,
) -> GenerationResult:
    job = job or Job()
    check_inputs(model, params)  # 1
    params = params.with_seed(resolve_seed(params.seed))
    result = GenerationResult(params=params)
    job.begin(params.n_iter, params.steps)
    text_params, lora_list = resolve_loras(params, loras, result.notes)
    extra = {}
    if lora_list:  # A1111: Lora hashes: "name: hash, ..."
        extra["Lora hashes"] = ", ".join(f"{lora.name}: {lora.short_hash}" for lora, _ in lora_list)
    # The LoRAs are merged for the whole job and the model's own weights restored after it.
    with lora_patch.applied(model, lora_list, result.notes):
        conditioning = encode_prompt(model, text_params, embeddings)  # 2 (once for every image)
        if conditioning.embeddings_used:  # A1111: TI hashes: "name: hash, ..."
            extra["TI hashes"] = ", ".join(f"{name}: {h}" for name, h in conditioning.embeddings_used)
        _sample_batches(model, params, conditioning, job, save, result, extra)
    return result


def _sample_batches(
    model: LoadedModel,
    params: GenerationParams,
    conditioning: Conditioning,
    job: Job,
    save: SaveOptions | None,
    result: GenerationResult,
    extra: dict[str, object],
) -> None:
    options = sampler_options(params)  # the job's sampler parameters (A1111 defaults where unset)
    sigmas = make_sigmas(model, params, options)
    for batch in range(params.n_iter):
        job.progress.batch = batch
        seeds = [params.seed + batch * params.batch_size + i for i in range(params.batch_size)]
        x, rng = prepare_latents(model, params, seeds, float(sigmas[0]))  # 3
        try:
            latents = denoise(model, params, x, sigmas, conditioning, rng, job, options)  # 4
        except _Stopped as stopped:
            latents, result.interrupted = stopped.latents, True
        pictures = to_pil(decode(model, latents, result.notes))  # 5, 6
        for i, (image, seed) in enumerate(zip(pictures, seeds, strict=True)):
            infotext = build_infotext(
                params,  # the prompts as written, <lora:...> tags included (A1111 keeps them)
                seed=seed,
                model_name=model.info.name,
                model_hash=model.short_hash,
                batch_pos=i if params.batch_size > 1 else None,
                extra=extra,
            )
            path = image_io.save_image(image, save.outdir, seed=seed, infotext=infotext) if save else None
            result.images.append(image)  # 7
            result.infotexts.append(infotext)
            result.seeds.append(seed)
            result.paths.append(path)
        if job.interrupted:
            break
