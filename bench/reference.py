"""diffusers' own StableDiffusionPipeline on an Atelier model's components: the baseline our loop is
compared against, for speed (bench/overhead.py) and for pixels (tests/pipeline/test_txt2img.py)."""

from __future__ import annotations

from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline


def diffusers_euler_pipeline(model) -> StableDiffusionPipeline:
    """Euler with linspace timestep spacing = A1111's Euler on the "Uniform" schedule (timesteps
    evenly spaced 999 → 0), SD's scaled-linear β schedule."""
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        prediction_type=model.prediction_type,
        timestep_spacing="linspace",
    )
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


def diffusers_sdxl_pipeline(model):
    """diffusers' StableDiffusionXLPipeline on an Atelier SDXL model's components (Euler, "Uniform")."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer,
        tokenizer_2=model.tokenizer_2,
        unet=model.unet,
        scheduler=_euler_linspace(model.prediction_type),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_sdxl_img2img_pipeline(model):
    """diffusers' StableDiffusionXLImg2ImgPipeline on an SDXL base or refiner (the refiner has no
    first text encoder and takes the aesthetic score)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer,
        tokenizer_2=model.tokenizer_2,
        unet=model.unet,
        scheduler=_euler_linspace(model.prediction_type),
        requires_aesthetics_score=model.text_encoder is None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
