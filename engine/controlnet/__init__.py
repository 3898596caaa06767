"""ControlNet: units (settings + control picture), preprocessors, model files, and the per-step
residuals fed to the UNet. See `engine.controlnet.apply` for how units enter the denoising loop."""
