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
