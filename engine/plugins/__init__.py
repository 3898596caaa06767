"""Extensions: the hook stages and their typed contexts (`hooks`), where the pipelines fire them
(`firing`), the loader and installer, an extension's argument model (`args`), and scripts that
take a job over (`scripts`, `script_jobs`).

`PUBLIC` lists the engine modules an extension may import (docs/extensions.md); the rest of the
engine may change shape without notice. tests/unit/test_layout.py keeps the built-in extensions
on it.
"""

PUBLIC = (
    "engine.plugins.args",  # ExtensionArgs: declare arguments
    "engine.plugins.hooks",  # Stage and the typed contexts
    "engine.plugins.scripts",  # ScriptContext, EngineNames
    "engine.pipeline.results",  # GenerationResult
    "engine.pipeline.img2img",  # Img2ImgInputs (pictures handed to ctx.process)
    "engine.pipeline.rng",  # resolve_seed(s): -1 → a random seed, as the pipelines do
    "engine.schema.params",  # the parameter schema, its limits and choice lists
    "engine.schema.infotext",  # reading and writing A1111 parameters text
    "engine.sampling.registry",  # sampler and schedule names
    "engine.output.images",  # grids
    "engine.output.grid_legend",  # legends around grids
    "engine.upscale.tiling",  # overlapping tiles and their blending ramps
)
