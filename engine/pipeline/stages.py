"""The stages every generation job shares (docs/design.md, example 7):

    check_inputs → encode_prompt → prepare_latents → denoise → decode → postprocess → save

Each stage is a small named function; `engine.pipeline.txt2img`, `engine.pipeline.img2img` and
`engine.pipeline.hires` read as the numbered lists of them. The denoising loop is ours (a σ-space
sampler from `engine.sampling`), not a diffusers pipeline `__call__`. The rules more than one kind
of job follows live here once: the per-image seeds of a batch (`batch_seeds`) and the tail of the
schedule a denoising strength selects (`strength_tail`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from engine.conditioning.clip import ClipEncoder, clip_layers
from engine.conditioning.embeddings import EmbeddingDatabase
from engine.conditioning.schedule import Conditioning, encode_conditioning
from engine.conditioning.t5 import T5Encoder
from engine.controlnet.apply import ControlNetStack, PreparedUnit, prepare_units
from engine.models import lora as lora_patch
from engine.models.families import AESTHETIC_SCORES
from engine.models.lora import LoraFile, LoraLibrary, LoraRequest, extract_lora_tags
from engine.models.types import LoadedModel
from engine.output import images as image_io
from engine.pipeline import preview
from engine.pipeline.latents import decode, to_pil
from engine.pipeline.networks import DISTILLED_CFG, network_call
from engine.pipeline.refiner import Refiner, SwitchedGuider, check_pair, switch_step
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import ImageRNG
from engine.plugins import firing as stage_hooks
from engine.sampling.denoiser import CFGGuider, GuidanceHooks, SigmaDenoiser
from engine.sampling.registry import SAMPLERS, build_sigmas
from engine.sampling.samplers import SamplerOptions, StepInfo
from engine.schema.params import GenerationParams
from engine.service.jobs import Job, JobInterrupted, JobSkipped


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
    layers = clip_layers(model.first_text_encoder)
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
        clip_encoders(model),
        params.prompt,
        params.negative_prompt,
        params.steps,
        model.device,
        emphasis=params.emphasis or "Original",
        clip_skip=params.CLIP_stop_at_last_layers or 1,
        embeddings=embeddings,
        zero_empty_negative=model.spec.zero_empty_negative,
        sequence=t5_encoder(model),
        clip_in_sequence=model.spec.clip_in_sequence,
    )
    return conditioning.to(model.dtype)


def clip_encoders(model: LoadedModel) -> list[ClipEncoder]:
    """The model's CLIP text encoders as its family uses them: which hidden layer, whether through
    the final norm, and which give the pooled embedding."""
    spec = model.spec
    return [
        ClipEncoder(tokenizer, encoder, spec.native_layer, spec.final_norm, spec.pooled and slot.gives_pooled)
        for slot, tokenizer, encoder in model.text_encoders()
        if slot.kind == "clip"
    ]


def t5_encoder(model: LoadedModel) -> T5Encoder | None:
    """The model's T5 encoder, whose tokens follow CLIP's (SD 3), or None. A checkpoint without
    its T5 weights gets zeros in their place, as the reference pipeline allows."""
    for slot, tokenizer, encoder in model.text_encoders():
        if slot.kind == "t5":
            width = int(model.unet.config.joint_attention_dim)
            return T5Encoder(tokenizer, encoder, model.spec.sequence_tokens, width)
    return None


# -- 3. prepare latents ---------------------------------------------------------------------------
def make_sigmas(
    model: LoadedModel, params: GenerationParams, options: SamplerOptions | None = None
) -> torch.Tensor:
    return build_sigmas(
        params.sampler_name,
        params.scheduler,
        params.steps,
        model.model_sigmas(options.shift if options is not None else None, (params.width, params.height)),
        options,
        is_sdxl=model.spec.latents == "sdxl",  # Align Your Steps' SDXL table for SDXL and its refiner
    )


def strength_tail(
    model: LoadedModel,
    params: GenerationParams,
    strength: float,
    options: SamplerOptions | None = None,
    fix_steps: bool = False,
) -> torch.Tensor:
    """The tail of the schedule a denoising strength selects (A1111's `setup_img2img_steps`), for
    img2img and the hires pass alike: int(strength · steps) + 1 σ's of a `steps` schedule, or with
    `fix_steps` (A1111's `img2img_fix_steps`) the last `steps` steps of a steps/strength schedule."""
    strength = min(strength, 0.999)
    if fix_steps:
        total, t_enc = int(params.steps / strength), params.steps - 1
    else:
        total, t_enc = params.steps, int(strength * params.steps)
    sigmas = make_sigmas(model, params.model_copy(update={"steps": total}), options)
    return sigmas[max(0, len(sigmas) - 1 - t_enc - 1) :]


def batch_seeds(params: GenerationParams, batch: int) -> list[int]:
    """The seeds of batch number `batch`: image i of a job has seed + i (A1111), so any picture of
    a batch can be made again alone from its own seed."""
    first = params.seed + batch * params.batch_size
    return list(range(first, first + params.batch_size))


def prepare_latents(model: LoadedModel, params: GenerationParams, seeds: list[int], sigma_max: float):
    """Initial noise x_T = σ_max · N(0, I), one seeded CPU generator per image."""
    f = model.vae_scale_factor
    shape = (model.latent_channels, params.height // f, params.width // f)
    rng = ImageRNG.for_params(params, seeds, shape, model.device)
    return rng.next() * sigma_max, rng


# -- 4. denoise -----------------------------------------------------------------------------------
def make_denoiser(
    model: LoadedModel,
    image_cond: torch.Tensor | None = None,
    control: ControlNetStack | None = None,
    aesthetic: tuple[float, float] = AESTHETIC_SCORES,
    guidance: float = DISTILLED_CFG,
) -> SigmaDenoiser:
    """`image_cond`: an inpainting UNet's extra input channels (mask + masked-image latents),
    one row per image; the CFG batch repeats the images, so the rows are tiled to match.
    `control`: ControlNet residuals added to the UNet's skip connections at every evaluation.
    `aesthetic`: the SDXL refiner's (prompt, negative) aesthetic scores; `guidance`: Flux dev's
    distilled guidance. The family says which network call that is (engine.pipeline.networks)."""
    call = network_call(model, image_cond, control, aesthetic, guidance)
    wants_count = control is not None or model.spec.wants_uncond_count
    return SigmaDenoiser(call, model.model_sigmas(), model.prediction_type, wants_uncond_count=wants_count)


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
    refiner: Refiner | None = None,
) -> torch.Tensor:
    """Run the sampler. On interrupt/skip, returns the latest x̂₀ estimate (A1111's behaviour).
    `rng` is the sampler's noise source: fresh per-image noise, and Brownian paths for SDE samplers.
    `hooks` reach into guidance (inpainting blends the kept latents there); `image_cond` feeds an
    inpainting UNet; `refiner` takes over at its switch step (engine.pipeline.refiner)."""
    options = options or SamplerOptions()
    rng.apply_noise_seed_delta(options.eta_noise_seed_delta)
    if model.is_inpainting and image_cond is None:
        raise ValueError("an inpainting model needs image conditioning")
    sampling = stage_hooks.before_sampling(job, x, sigmas, rng.seeds)
    if sampling is not None:
        x, sigmas = sampling.latents, sampling.sigmas
    hooks = stage_hooks.guidance(job, hooks, sigmas)

    def guider_for(model: LoadedModel, conditioning: Conditioning, image_cond=None, control=None):
        return CFGGuider(
            make_denoiser(model, image_cond, control, job.aesthetic_scores, params.distilled_cfg_scale),
            conditioning,
            params.cfg_scale,
            sigmas=sigmas,
            hooks=hooks,
            skip_early_cond=options.skip_early_cond,
            s_min_uncond=options.s_min_uncond,
            s_min_uncond_all=options.s_min_uncond_all,
        )

    guider = guider_for(model, conditioning, image_cond, control)
    at_step = switch_step(refiner.switch_at, len(sigmas) - 1) if refiner is not None else len(sigmas)
    if refiner is not None and at_step < len(sigmas) - 1:

        def on_switch(seconds: float, moved: bool) -> None:
            how = "swapped in" if moved else "switched to"  # moved: the plan kept it in RAM till now
            job.progress.textinfo = f"Refiner {refiner.model.info.title} {how} in {seconds:.1f} s"

        # the base's ControlNet and inpainting inputs do not fit the refiner's UNet
        second = guider_for(refiner.model, refiner.conditioning)
        guider = SwitchedGuider(guider, second, sigmas, at_step, refiner, on_switch)
    last = {"denoised": x}

    def on_step(info: StepInfo) -> None:
        last["denoised"] = info.denoised
        job.step_done()
        preview = None
        if job.wants_preview(info.step):
            job.preview = preview = _preview(model, info.denoised, job.preview_kind)
            job.preview_step = info.step
        stage_hooks.step_end(job, info, preview)
        job.check()

    spec = SAMPLERS[params.sampler_name]
    try:
        job.check()
        # σ's on the CPU: samplers read them as numbers every step (see SigmaDenoiser)
        space = model.model_sigmas().space  # where fresh noise goes (ε-, v- or flow models)
        latents = spec.fn(guider, x, sigmas.cpu(), noise=rng, callback=on_step, options=options, space=space)
    except (JobInterrupted, JobSkipped):
        raise Stopped(last["denoised"]) from None
    return stage_hooks.after_sampling(job, sampling, latents)


def until_stopped(
    result: GenerationResult, run: Callable[..., torch.Tensor], *args, **kwargs
) -> torch.Tensor:
    """`run(*args, **kwargs)` (a denoising pass); when the user interrupts or skips, its latest x̂₀
    instead, with the result marked interrupted (A1111 decodes and saves that picture)."""
    try:
        return run(*args, **kwargs)
    except Stopped as stopped:
        result.interrupted = True
        return stopped.latents


class Stopped(Exception):
    """Interrupt or skip mid-sampling: carries the latest x̂₀ estimate, which is decoded and saved."""

    def __init__(self, latents: torch.Tensor):
        self.latents = latents


# -- 5. decode, 6. postprocess: engine.pipeline.latents (decode, encode, to_pil, conditioning) -------


# -- shared by every pipeline ---------------------------------------------------------------------
def encode_with_hooks(
    model: LoadedModel, params: GenerationParams, embeddings: EmbeddingDatabase | None, job: Job | None
) -> Conditioning:
    def encode_texts(prompt: str, negative: str) -> Conditioning:
        update = {"prompt": prompt, "negative_prompt": negative}
        return encode_prompt(model, params.model_copy(update=update), embeddings)

    return stage_hooks.encode(job, params.prompt, params.negative_prompt, encode_texts)


def refiner_plan(
    model: LoadedModel,
    params: GenerationParams,
    refiner: LoadedModel | None,
    embeddings: EmbeddingDatabase | None,
    job: Job,
) -> Refiner | None:
    """The job's refiner with the prompts encoded for it (without their <lora:…> tags), or None."""
    if refiner is None or not params.uses_refiner:
        return None
    check_pair(model, refiner)
    update = {
        "prompt": extract_lora_tags(params.prompt)[0],
        "negative_prompt": extract_lora_tags(params.negative_prompt)[0],
    }
    conditioning = encode_with_hooks(refiner, params.model_copy(update=update), embeddings, job)
    return Refiner(refiner, conditioning.to(device=model.device), params.refiner_switch_at)


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
    # Forge writes "Distilled CFG Scale" for the models that take it (Flux dev) and no others
    distilled = params.distilled_cfg_scale if model.takes_guidance else None
    extra: dict[str, object] = {"Distilled CFG Scale": distilled}
    if lora_list:  # A1111: Lora hashes: "name: hash, ..."
        extra["Lora hashes"] = ", ".join(f"{lora.name}: {lora.short_hash}" for lora, _ in lora_list)
    with lora_patch.applied(model, lora_list, result.notes):
        conditioning = encode_with_hooks(model, text_params, embeddings, job)  # once for every image
        if conditioning.embeddings_used:  # A1111: TI hashes: "name: hash, ..."
            extra["TI hashes"] = ", ".join(f"{name}: {h}" for name, h in conditioning.embeddings_used)
        yield conditioning, extra


def _preview(model: LoadedModel, denoised: torch.Tensor, kind: str) -> Image.Image:
    """The live preview of the first image: A1111's "Approx cheap" (no VAE: no memory spike, no
    swap under the medvram plan) or the full decode."""
    if kind == preview.APPROX_CHEAP:  # latent-sized; shown at the picture's size like the full one
        size = (denoised.shape[-1] * model.vae_scale_factor, denoised.shape[-2] * model.vae_scale_factor)
        return preview.approx_cheap(model, denoised[:1]).resize(size, Image.Resampling.BILINEAR)
    return to_pil(decode(model, denoised[:1]))[0]


def prepare_control(model, params, control, controlnets, fallback_image=None) -> list[PreparedUnit]:
    """The job's ControlNet units, ready to run (their maps at the job's size)."""
    if not control:
        return []
    if controlnets is None:
        raise ValueError("ControlNet units were given but no ControlNet folder is configured")
    units = prepare_units(control, model, controlnets, params.width, params.height, fallback_image)
    if model.residency is not None:  # they run at every step: on the GPU with the UNet, or streamed
        for unit in units:
            model.residency.add("unet", unit.model)
    return units


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
