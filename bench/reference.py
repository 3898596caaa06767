"""diffusers' own pipelines (SD, SDXL, SD 3, Flux) on an Atelier model's components: the baseline
our loop is compared against, for speed (bench/overhead.py, bench/sdxl.py) and for pixels
(tests/pipeline/test_txt2img.py, test_sdxl.py)."""

from __future__ import annotations

from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline


def diffusers_euler_pipeline(model) -> StableDiffusionPipeline:
    """Euler with linspace timestep spacing = A1111's Euler on the "Uniform" schedule (timesteps
    evenly spaced 999 → 0), SD's scaled-linear β schedule."""
    scheduler = _euler_linspace(model.prediction_type)
    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _euler_linspace(prediction_type: str) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        prediction_type=prediction_type,
        timestep_spacing="linspace",
    )


def _sdxl_components(model) -> dict:
    """An SDXL model's modules under diffusers' names (the refiner's first encoder is None)."""
    names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet")
    return {name: getattr(model, name) for name in names} | {
        "scheduler": _euler_linspace(model.prediction_type)
    }


def diffusers_sdxl_pipeline(model):
    """diffusers' StableDiffusionXLPipeline on an Atelier SDXL model's components (Euler, "Uniform")."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**_sdxl_components(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_sdxl_img2img_pipeline(model):
    """diffusers' StableDiffusionXLImg2ImgPipeline on an SDXL base or refiner (the refiner has no
    first text encoder and takes the aesthetic score)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    refiner = model.text_encoder is None
    pipe = StableDiffusionXLImg2ImgPipeline(**_sdxl_components(model), requires_aesthetics_score=refiner)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _flow_components(model) -> dict:
    """An SD 3 or Flux model's modules under diffusers' names (its text-encoder slots use them),
    with a flow scheduler that takes σ's as given: shift 1 and no dynamic shift, since ours are
    already shifted and diffusers would shift the σ's it is handed again."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from engine.models.tokenizer import tokenizer_folder

    parts = {
        "transformer": model.unet,
        "vae": model.vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
    }
    for slot, tokenizer, encoder in model.text_encoders():
        parts[slot.component] = encoder
        parts[tokenizer_folder(slot.component)] = tokenizer
    return parts


def diffusers_sd3_pipeline(model):
    from diffusers import StableDiffusion3Pipeline

    return _quiet(StableDiffusion3Pipeline(**_flow_components(model)))


def diffusers_sd3_img2img_pipeline(model):
    from diffusers import StableDiffusion3Img2ImgPipeline

    return _quiet(StableDiffusion3Img2ImgPipeline(**_flow_components(model)))


def diffusers_flux_pipeline(model):
    from diffusers import FluxPipeline

    return _quiet(FluxPipeline(**_flow_components(model)))


def diffusers_flux_img2img_pipeline(model):
    from diffusers import FluxImg2ImgPipeline

    return _quiet(FluxImg2ImgPipeline(**_flow_components(model)))


def _quiet(pipe):
    """A pipeline without its progress bar (benchmarks and tests print their own lines)."""
    pipe.set_progress_bar_config(disable=True)
    return pipe
