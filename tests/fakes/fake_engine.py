"""An in-memory stand-in for `engine.service.facade.Engine`: no torch, no model, instant start.

For the UI's own tests and for working on the layout (`build_ui(FakeEngine())`): it keeps the
real Job/Progress/GenerationResult types, so the UI sees the same objects it gets in production,
and paints flat-colour images "step by step" so progress, preview and interrupt can be watched.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.models.extra_networks import NetworkCard, list_cards
from engine.pipeline.img2img import Img2ImgInputs
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seeds
from engine.pipeline.stages import batch_seeds
from engine.plugins.loader import ExtensionManager
from engine.schema.params import GenerationParams, Img2ImgParams
from engine.schema.settings import Settings
from engine.schema.styles import Style, StyleFile, with_styles_applied
from engine.service.jobs import Job, JobInterrupted, JobQueue, JobSkipped


def fake_infotext(params: GenerationParams, seed: int) -> str:
    """A1111-shaped parameters text (enough for the UI; the real one is engine.infotext's)."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    lines.append(
        f"Steps: {params.steps}, Sampler: {params.sampler_name}, Schedule type: {params.scheduler}, "
        f"CFG scale: {params.cfg_scale}, Seed: {seed}, Size: {params.width}x{params.height}"
    )
    return "\n".join(lines)


class FakeEngine:
    def __init__(
        self,
        *,
        step_seconds: float = 0.0,
        checkpoints: list[str] | None = None,
        styles_path: Path | None = None,
    ):
        self.step_seconds = step_seconds
        self.data_dir = Path(tempfile.mkdtemp(prefix="fake-engine-"))
        self.styles_path = styles_path or self.data_dir / "styles.csv"
        self._settings = Settings()
        self.checkpoints = checkpoints if checkpoints is not None else ["builtin [0000000000]"]
        self.loaded: str | None = None
        self.submitted: list[GenerationParams] = []
        self.submitted_inputs: list[Img2ImgInputs] = []
        self.submitted_control: list[list[ControlInput] | None] = []
        self.submitted_extensions: list[tuple[Any, Any]] = []  # (extension_args, script) per job
        self.queue = JobQueue()
        # No extension folders: tests that need extensions give the fake a loaded manager.
        self.extensions = ExtensionManager([], self.data_dir / "extensions.json")
        self.extension_install_allowed = True
        self.preferences: dict[str, dict[str, Any]] = {}  # checkpoint title → its preferred settings

    @property
    def settings(self) -> Settings:
        return self._settings

    def update_settings(self, **changes: Any) -> Settings:
        # Same contract as the engine: validate the whole model, raise on invalid values.
        self._settings = Settings.model_validate({**self._settings.model_dump(), **changes})
        return self._settings

    def list_checkpoints(self) -> list[str]:
        return list(self.checkpoints)

    def refresh_checkpoints(self) -> list[str]:
        return self.list_checkpoints()

    def has_checkpoint(self, title: str) -> bool:
        return title.split(" [")[0] in self.checkpoints

    def current_checkpoint(self) -> str | None:
        # Like the engine: the loaded one, else the one that would load (without loading it).
        return self.loaded or (self.checkpoints[0] if self.checkpoints else None)

    def load_checkpoint(self, title: str) -> None:
        job = self.submit_load(title)
        job.wait()
        if job.error is not None:
            raise job.error

    def submit_load(self, title: str) -> Job:
        # Like the engine: an unknown title fails at once, a known one loads as a queued job.
        if title not in self.checkpoints:
            raise ValueError(f"no checkpoint named {title!r}")

        def load(*, job: Job) -> str:
            self.loaded = title
            return title

        return self.queue.submit(Job("load"), load)

    def preferred_sampler_settings(self, title: str | None = None) -> dict[str, Any]:
        preferred = self.preferences.get(title or self.current_checkpoint() or "", {})
        if isinstance(preferred, Exception):  # a test's broken <checkpoint>.json
            raise preferred
        return dict(preferred)

    def default_size(self) -> int:
        return self.size_choices()[0]

    def memory_plan_text(self) -> str:
        return "gpu-only: runs on the CPU: nothing to move"

    def size_choices(self) -> tuple[int, list[tuple[int, int]]]:
        # Like the engine, by family: a title with "xl" in it stands for an SDXL checkpoint.
        from engine.models.families import FAMILIES

        title = (self.current_checkpoint() or "").lower()
        native, name = (1024, "sdxl") if "xl" in title else (128, "sd1")
        return native, FAMILIES[name].sizes(native)

    def generation_proposal(self) -> dict[str, float]:
        # Like the engine: a title with "flux" in it stands for a Flux checkpoint ("schnell": 4 steps).
        title = (self.current_checkpoint() or "").lower()
        proposal = {"cfg_scale": self.settings.default_cfg_scale, "steps": self.settings.default_steps}
        if "flux" in title:
            proposal["cfg_scale"] = 1.0
            if "schnell" in title:
                proposal["steps"] = 4
        return proposal

    def sampler_names(self) -> list[str]:
        return ["Euler a", "Euler", "DDIM", "DPM++ 2M"]

    def schedule_names(self) -> list[str]:
        return ["Automatic", "Uniform", "Karras", "Exponential", "DDIM"]

    def schedule_hint(self, sampler: str) -> str:
        return f"Automatic = Uniform, the usual choice for {sampler}"

    def count_tokens(self, prompt: str, steps: int, *, is_negative: bool = False) -> tuple[int, int]:
        from engine.conditioning.schedule import count_prompt_tokens  # real and cheap: no model

        return count_prompt_tokens(prompt, steps, is_negative=is_negative)

    def styles(self) -> StyleFile:
        return StyleFile.read(self.styles_path)

    def save_style(self, name: str, prompt: str, negative_prompt: str) -> StyleFile:
        return self.styles().save(Style(name, prompt, negative_prompt))

    def extra_networks(self) -> list[NetworkCard]:
        return list_cards(self.data_dir / "Lora", self.data_dir / "embeddings")

    def submit_txt2img(
        self,
        params: GenerationParams,
        control: list[ControlInput] | None = None,
        *,
        extension_args: dict[str, Any] | None = None,
        script: Any = None,
    ) -> Job:
        params = with_styles_applied(params, self.styles())
        self.submitted.append(params)
        self.submitted_control.append(control)
        self.submitted_extensions.append((extension_args, script))
        return self.queue.submit(Job("txt2img", preview_every=1), self._run, params)

    def submit_img2img(
        self,
        params: Img2ImgParams,
        inputs: Img2ImgInputs,
        control: list[ControlInput] | None = None,
        *,
        extension_args: dict[str, Any] | None = None,
        script: Any = None,
    ) -> Job:
        """Like the engine: the params as submitted are recorded, with their pictures."""
        params = with_styles_applied(params, self.styles())
        self.submitted.append(params)
        self.submitted_control.append(control)
        self.submitted_extensions.append((extension_args, script))
        self.submitted_inputs.append(inputs)
        return self.queue.submit(Job("img2img", preview_every=1), self._run, params)

    def submit_img2img_batch(
        self,
        params: Img2ImgParams,
        input_dir: Path,
        output_dir: Path,
        mask_dir: Path | None = None,
        use_png_info: bool = False,
        control: list[ControlInput] | None = None,
        *,
        extension_args: Any = None,
    ) -> Job:
        from engine.pipeline.img2img_batch import run_batch

        if not Path(input_dir).is_dir():
            raise ValueError(f"folder not found: {input_dir}")
        self.submitted.append(params)
        self.submitted_control.append(control)

        def run_one(one: Img2ImgParams, inputs: Img2ImgInputs, job: Job) -> GenerationResult:
            return self._run(one, job=job)

        def run(p: Img2ImgParams, *, job: Job):
            return run_batch(
                lambda one, i: run_one(one, i, job),
                p,
                input_dir,
                output_dir,
                mask_dir=mask_dir,
                use_png_info=use_png_info,
            )

        return self.queue.submit(Job("img2img"), run, params)

    def upscaler_names(self) -> list[str]:
        return ["None", "Lanczos", "Nearest"]

    def submit_extras(self, params: Any, pictures: list[Any]) -> Job:
        from engine.upscale.extras import ExtrasResult

        def run(*, job: Job) -> ExtrasResult:
            factor = params.upscaling_resize if params.resize_mode == 0 else 2
            images = [p.resize((round(p.width * factor), round(p.height * factor))) for p in pictures]
            return ExtrasResult(images=images, infotexts=["Postprocess upscaler: fake"] * len(images))

        self.submitted.append(params)
        return self.queue.submit(Job("extras"), run)

    def submit_extras_folder(self, params: Any, input_dir: Path, output_dir: Path) -> Job:
        raise ValueError(f"folder not found: {input_dir}")

    def controlnet_models(self) -> list[str]:
        return ["control_fake_canny"]

    def preprocessors(self) -> list[tuple[str, str | None]]:
        from engine.controlnet.preprocessors import PREPROCESSORS, availability

        return [(name, availability(name, None)) for name in PREPROCESSORS]

    def preview_control(self, unit: ControlNetUnit, image: Any, width: int, height: int) -> Any:
        from engine.controlnet.apply import control_map

        return control_map(unit, image, width, height, None)[0]

    def txt2img(self, params: GenerationParams) -> GenerationResult:
        job = self.submit_txt2img(params)
        job.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self, params: GenerationParams, *, job: Job) -> GenerationResult:
        params = resolve_seeds(params)
        result = GenerationResult(params=params)
        job.begin(params.n_iter, params.steps)
        try:
            for batch in range(params.n_iter):
                job.progress.batch = batch
                try:
                    self._sample(params, job)
                except JobSkipped:  # Skip abandons this batch only
                    continue
                for seed in batch_seeds(params, batch):
                    colour = (seed * 53 % 256, seed * 97 % 256, seed * 193 % 256)
                    result.images.append(Image.new("RGB", (params.width, params.height), colour))
                    result.seeds.append(seed)
                    result.infotexts.append(fake_infotext(params, seed))
                    result.paths.append(None)
        except JobInterrupted:
            result.interrupted = True
        return result

    def _sample(self, params: GenerationParams, job: Job) -> None:
        for step in range(params.steps):
            job.check()
            time.sleep(self.step_seconds)
            job.step_done()
            shade = int(255 * (step + 1) / params.steps)
            job.preview = Image.new("RGB", (params.width, params.height), (shade, 0, 255 - shade))
