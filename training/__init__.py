"""Training of the built-in model (``tools/train_default_model.py`` is the command line).

Two stages, each resumable and deterministic from one seed:

1. ``training.vae_stage`` — the ×8 AutoencoderKL on synthetic-world scenes;
2. ``training.diffusion_stage`` — UNet + CLIP text encoder jointly, on latents of a fixed scene set
   encoded once by the frozen VAE (ε-prediction, SD's scaled-linear schedule).

``training.export`` writes the result as an fp16 SD single-file checkpoint plus its config sidecar,
the layout a user's own checkpoint has, so the app loads it through the ordinary code path.
"""
