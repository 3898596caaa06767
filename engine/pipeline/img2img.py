"""The img2img / inpainting stage pipeline (docs/design.md, example 7), beside txt2img's:

    check_inputs → prepare_pictures → encode_prompt → encode_init → denoise (from σ at the
    strength, kept latents blended every step) → decode → overlay → save

A1111's semantics throughout: strength × steps are run (or exactly `steps` with
`img2img_fix_steps`), the noise is `σ_start · N(0, I) · Initial noise multiplier` added to the
picture's latents, a standard model keeps the unmasked latents by blending x̂₀ after every guidance
call, an SD inpainting model (9-channel UNet) gets the mask and the masked picture's latents as
extra input channels, and the final picture is the original with the repainted area composited in,
so every kept pixel is exactly the input's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from engine.conditioning.embeddings import EmbeddingDatabase
from engine.controlnet.apply import control_infotext, control_stack, crop_inputs
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput
from engine.models.lora import LoraLibrary
from engine.models.types import LoadedModel
from engine.output import images as image_io
from engine.pipeline import masking, stages
from engine.pipeline.latents import decode_with_hooks, encode, inpaint_conditioning, to_pil, to_tensor
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import ImageRNG, resolve_seeds
from engine.plugins import firing as stage_hooks
from engine.sampling.denoiser import GuidanceHooks
from engine.schema.infotext import build_infotext
from engine.schema.params import Img2ImgParams
from engine.schema.sampler_params import sampler_options
from engine.service.jobs import Job

MAX_INPUT_PIXELS = 4096 * 4096  # a larger upload is refused: decoding it alone could exhaust memory
LATENT_UPSCALE = 3  # resize mode "Just resize (latent upscale)"


@dataclass
class Img2ImgInputs:
    """The pictures of a job. One init image serves the whole batch; a mask (255 = repaint) makes
    it an inpainting job. `latent_mask` (outpainting) decides which latents are repainted when it
    must differ from the mask that decides which pixels are kept."""

    init_images: list[Image.Image]
    mask: Image.Image | None = None
    latent_mask: Image.Image | None = None


@dataclass
class Prepared:
    """Stage 2's output: the pictures at the processing size, and how to put the results back."""

    pictures: list[Image.Image]  # RGB at width × height (or the source size for latent upscale)
    originals: list[Image.Image]  # what strength 0 returns: the input after resizing
    repaint: Image.Image | None = None  # "L" at processing size, 255 = repaint (the latent mask)
    overlays: list[Image.Image] = field(default_factory=list)  # RGBA kept-original layers
    paste_to: masking.Region | None = None  # only-masked inpainting: where the result goes back


# -- 1. check inputs ------------------------------------------------------------------------------
def check_inputs(model: LoadedModel, params: Img2ImgParams, inputs: Img2ImgInputs, notes: list[str]) -> None:
    stages.check_inputs(model, params)
    if not inputs.init_images:
        raise ValueError("img2img needs an input picture")
    if len(inputs.init_images) > 1 and len(inputs.init_images) != params.batch_size:
        raise ValueError(f"{len(inputs.init_images)} input pictures for a batch of {params.batch_size}")
    for picture in [*inputs.init_images, *filter(None, [inputs.mask, inputs.latent_mask])]:
        if picture.width * picture.height > MAX_INPUT_PIXELS:
            raise ValueError(
                f"the picture is {picture.width}×{picture.height}; the limit is {MAX_INPUT_PIXELS:,} pixels"
            )
    if inputs.mask is not None:
        size = inputs.init_images[0].size
        if inputs.mask.size != size:
            notes.append(
                f"the mask was {inputs.mask.width}×{inputs.mask.height}; "
                f"resized to the picture's {size[0]}×{size[1]}"
            )
            inputs.mask = inputs.mask.resize(size, Image.Resampling.NEAREST)
        mask = masking.binary_mask(inputs.mask)
        if params.inpainting_mask_invert:
            mask = Image.eval(mask, lambda v: 255 - v)
        if masking.is_empty(mask):
            raise ValueError(
                "the mask leaves nothing to repaint: paint the area to change (or clear the mask for img2img)"
            )


# -- 2. prepare pictures --------------------------------------------------------------------------
def prepare_pictures(params: Img2ImgParams, inputs: Img2ImgInputs) -> Prepared:
    """Resize the inputs by the resize mode, build the mask, the "only masked" crop, the overlay and
    the masked-content fill; all in pixel space, as A1111 does."""
    w, h, mode = params.width, params.height, params.resize_mode
    sources = [image_io.flatten(p) for p in inputs.init_images]
    if inputs.mask is None:
        pictures = [
            _latent_upscale_source(p) if mode == LATENT_UPSCALE else image_io.resize_image(mode, p, w, h)
            for p in sources
        ]
        originals = [image_io.resize_image(mode, p, w, h) for p in sources]
        return Prepared(pictures, originals)

    mask = masking.binary_mask(inputs.mask)
    if params.inpainting_mask_invert:
        mask = Image.eval(mask, lambda v: 255 - v)
    mask = masking.blur_mask(mask, params.mask_blur or 0)
    paste_to = None
    if params.inpaint_full_res:
        region = masking.crop_region(mask, params.inpaint_full_res_padding or 0)
        assert region is not None  # check_inputs refused an empty mask
        paste_to = masking.expand_to_aspect(region, w, h, mask.width, mask.height)
        overlay_mask = mask
        repaint = image_io.resize_image(2, mask.crop(paste_to), w, h)
        originals = sources
        pictures = [image_io.resize_image(2, p.crop(paste_to), w, h) for p in sources]
    else:
        repaint = image_io.resize_image(mode, mask, w, h)
        overlay_mask = masking.sharpen_for_overlay(repaint)
        originals = [image_io.resize_image(mode, p, w, h) for p in sources]
        pictures = list(originals)
    overlays = [masking.overlay(p, overlay_mask) for p in originals]
    if inputs.latent_mask is not None:
        repaint = image_io.resize_image(mode, inputs.latent_mask.convert("L"), w, h)
    if params.masked_content == "fill":
        pictures = [masking.fill(p, repaint) for p in pictures]
    return Prepared(pictures, originals, repaint, overlays, paste_to)


def _latent_upscale_source(picture: Image.Image) -> Image.Image:
    """Latent upscale encodes the picture at its own size, rounded to the VAE's multiple of 8."""
    w, h = max(8, round(picture.width / 8) * 8), max(8, round(picture.height / 8) * 8)
    return picture if (w, h) == picture.size else picture.resize((w, h), Image.Resampling.LANCZOS)


# -- 3. initial latents -----------------------------------------------------------------------------
def latent_mask(repaint: Image.Image, latent_h: int, latent_w: int) -> torch.Tensor:
    """(1, 1, h, w), 1 = repaint: the pixel mask averaged over each latent's 8×8 block and rounded,
    so a latent is repainted when at least half its pixels are."""
    small = repaint.convert("L").resize((latent_w, latent_h), Image.Resampling.BOX)
    values = np.asarray(small, dtype=np.float32) / 255.0
    return torch.from_numpy(np.around(values))[None, None]


def img2img_sigmas(model: LoadedModel, params: Img2ImgParams, options) -> torch.Tensor:
    """The σ's img2img runs: the tail of the schedule its denoising strength selects."""
    return stages.strength_tail(model, params, params.denoising_strength, options, params.img2img_fix_steps)


# -- the pipeline ---------------------------------------------------------------------------------
@torch.no_grad()  # no autograd graph (not inference_mode: modules loaded or moved during a job would
# then hold inference tensors, which training and any later autograd use cannot take)
def img2img(
    model: LoadedModel,
    params: Img2ImgParams,
    inputs: Img2ImgInputs,
    *,
    job: Job | None = None,
    save: stages.SaveOptions | None = None,
    embeddings: EmbeddingDatabase | None = None,
    loras: LoraLibrary | None = None,
    control: list[ControlInput] | None = None,
    controlnets: ControlNetLibrary | None = None,
    refiner: LoadedModel | None = None,
) -> GenerationResult:
    """`refiner`: the loaded `params.refiner_checkpoint`, which continues the sampling and decodes."""
    job = job or Job("img2img")
    params = resolve_seeds(params)
    result = GenerationResult(params=params)
    inputs = Img2ImgInputs(list(inputs.init_images), inputs.mask, inputs.latent_mask)
    check_inputs(model, params, inputs, result.notes)  # 1
    kind = "img2img" if inputs.mask is None else "inpaint"
    resolved = stage_hooks.begin(job, kind, params, model, result.notes)
    if resolved is not params:  # an extension changed the job: check it again
        check_inputs(model, resolved, inputs, result.notes)
        params = result.params = resolved
    prepared = prepare_pictures(params, inputs)  # 2
    if control and prepared.paste_to is not None:  # only masked: the control pictures are cropped too
        control = crop_inputs(control, prepared.paste_to, inputs.init_images[0].size)
    # A unit without its own picture uses the img2img picture (A1111's default in img2img).
    units = stages.prepare_control(model, params, control, controlnets, prepared.pictures[0])
    recorded = _recorded_params(params, prepared)
    if params.denoising_strength == 0:  # nothing to denoise: the input, resized, is the answer
        job.begin(params.n_iter, 0)
        _emit_unchanged(model, params, recorded, prepared, save, result, job)
        return result
    options = sampler_options(params)
    sigmas = img2img_sigmas(model, params, options)
    job.begin(params.n_iter, len(sigmas) - 1)
    stack = control_stack(model, units, sigmas)
    with stages.text_conditioning(model, params, result, embeddings, loras, job) as (
        conditioning,
        extra,
    ):  # 3
        extra.update(control_infotext(units))
        plan = stages.refiner_plan(model, params, refiner, embeddings, job)
        if plan is not None:
            extra.update(plan.infotext())
        for batch in range(params.n_iter):
            job.progress.batch = batch
            seeds = stages.batch_seeds(params, batch)
            pictures = [prepared.pictures[i % len(prepared.pictures)] for i in range(len(seeds))]
            latents = _sample(
                model,
                params,
                prepared,
                pictures,
                seeds,
                sigmas,
                conditioning,
                job,
                options,
                result,
                stack,
                plan,
            )
            last = plan.last_model(model) if plan is not None else model
            decoded = to_pil(decode_with_hooks(last, latents, result.notes, job))
            for i, (image, seed) in enumerate(zip(decoded, seeds, strict=True)):
                if prepared.overlays:
                    layer = prepared.overlays[i % len(prepared.overlays)]
                    image = masking.apply_overlay(image, layer, prepared.paste_to)

                def infotext(entries: dict[str, object], seed: int = seed, i: int = i) -> str:
                    return _infotext(model, recorded, seed, i, {**extra, **entries})

                stages.emit_image(result, image, infotext, seed, save, job)
            if job.interrupted:
                break
    return result


def _sample(
    model,
    params,
    prepared,
    pictures,
    seeds,
    sigmas,
    conditioning,
    job,
    options,
    result,
    stack=None,
    refiner=None,
):
    """Stages 4-5 for one batch: encode the pictures, add noise at the first σ, denoise."""
    images = to_tensor(pictures, model.device)
    init = encode(model, images)
    if params.resize_mode == LATENT_UPSCALE:
        f = model.vae_scale_factor
        init = torch.nn.functional.interpolate(
            init, size=(params.height // f, params.width // f), mode="bilinear"
        )
    rng = ImageRNG.for_params(params, seeds, tuple(init.shape[1:]), model.device)
    noise = rng.next() * (1.0 if params.initial_noise_multiplier is None else params.initial_noise_multiplier)
    hooks, image_cond = None, None
    nmask = None
    if prepared.repaint is not None:
        nmask = latent_mask(prepared.repaint, init.shape[-2], init.shape[-1]).to(init)
        if params.masked_content == "latent noise":  # the first noise draw of the seeds, as A1111
            init = init * (1 - nmask) + ImageRNG(seeds, tuple(init.shape[1:]), model.device).next() * nmask
        elif params.masked_content == "latent nothing":
            init = init * (1 - nmask)
        kept = init * (1 - nmask)
        hooks = GuidanceHooks(post_cfg=[lambda x0, sigma: kept + x0 * nmask])
    if model.is_inpainting:
        pixel_mask = (
            to_tensor([prepared.repaint], model.device)[:, :1]
            if prepared.repaint is not None
            else torch.ones_like(images[:1, :1])  # plain img2img: the whole picture is "masked"
        )
        if images.shape[-2:] != (params.height, params.width):  # latent upscale
            images = torch.nn.functional.interpolate(
                images, size=(params.height, params.width), mode="bilinear"
            )
        image_cond = inpaint_conditioning(model, images, pixel_mask)
    x = model.model_sigmas().space.noised(init, noise, sigmas[0])
    latents = stages.until_stopped(
        result, stages.denoise, model, params, x, sigmas, conditioning, rng, job, options,
        hooks=hooks, image_cond=image_cond, control=stack, refiner=refiner,
    )  # fmt: skip
    if nmask is not None:
        latents = latents * nmask + init * (1 - nmask)
    return latents


def _recorded_params(params: Img2ImgParams, prepared: Prepared) -> Img2ImgParams:
    """What the infotext records: no mask keys without a mask, no padding for the whole picture."""
    if prepared.repaint is None:
        return params.without_mask_options()
    if not params.inpaint_full_res:
        return params.model_copy(update={"inpaint_full_res_padding": None})
    return params


def _infotext(model: LoadedModel, recorded: Img2ImgParams, seed: int, index: int, extra) -> str:
    return build_infotext(
        recorded,
        seed=seed,
        model_name=model.info.name,
        model_hash=model.short_hash,
        batch_pos=index if recorded.batch_size > 1 else None,
        extra=extra,
    )


def _emit_unchanged(model, params, recorded, prepared, save, result, job) -> None:
    for batch in range(params.n_iter):
        for i, seed in enumerate(stages.batch_seeds(params, batch)):
            image = prepared.originals[i % len(prepared.originals)].copy()
            stages.emit_image(result, image, _infotext(model, recorded, seed, i, {}), seed, save, job)
