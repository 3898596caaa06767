"""Upscalers: pixel resamplers, model upscalers through spandrel (tiled), and the latent modes of
hires fix. `engine.upscale.extras` is the Upscaling tab's job."""
