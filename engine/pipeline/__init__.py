"""The generation pipelines as numbered stages: `stages` holds the stages every kind of job shares,
`txt2img`, `img2img` (with inpainting) and `hires` compose them; `latents`, `rng` and `masking`
are their tools; `sd_upscale`, `outpaint` and `img2img_batch` run img2img over tiles, a widened
canvas or a folder."""
