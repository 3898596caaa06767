"""The Engine's picture tools besides txt2img / img2img: Upscaling (Extras), ControlNet previews,
picture upscalers for scripts, and img2img batch folders. A mixin of engine.service.facade.Engine,
kept apart so the facade stays readable; every method here queues on the same job queue."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.controlnet.apply import control_map
from engine.controlnet.preprocessors import PREPROCESSORS, availability
from engine.controlnet.preprocessors import run as run_preprocessor
from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.pipeline.img2img import Img2ImgInputs
from engine.pipeline.img2img_batch import BatchReport, run_batch
from engine.pipeline.results import GenerationResult
from engine.schema.params import Img2ImgParams
from engine.service.jobs import Job
from engine.upscale.extras import ExtrasParams, ExtrasResult, run_extras, run_extras_folder


class PictureTools:
    # -- Upscaling (Extras) ------------------------------------------------------------------------
    def upscaler_names(self) -> list[str]:
        return self.upscalers.names()

    def upscale_picture(self, picture: Any, scale: float, upscaler: str) -> Any:
        """`picture` enlarged `scale` times by `upscaler` (a name of `upscaler_names()`)."""
        names = self.upscalers.names()
        if upscaler not in names:
            raise ValueError(f"unknown upscaler {upscaler!r} (known: {', '.join(names)})")
        return self.upscalers.upscale(picture, scale, upscaler)

    def submit_extras(self, params: ExtrasParams, pictures: list[Any]) -> Job:
        """Upscale pictures (saved under extras-images); the job's result is an ExtrasResult."""
        if not pictures:
            raise ValueError("Upscaling: add a picture first")
        return self.queue.submit(Job("extras"), self._run_extras, params, pictures)

    def submit_extras_folder(self, params: ExtrasParams, input_dir: Path, output_dir: Path) -> Job:
        """Upscale every picture of a folder into another, under the same names (a BatchReport)."""
        if not Path(input_dir).is_dir():
            raise ValueError(f"folder not found: {input_dir}")
        if Path(output_dir).resolve() == Path(input_dir).resolve():
            raise ValueError("the output folder must differ from the input folder")
        return self.queue.submit(
            Job("extras"), self._run_extras_folder, params, Path(input_dir), Path(output_dir)
        )

    def _run_extras(self, params: ExtrasParams, pictures: list[Any], *, job: Job) -> ExtrasResult:
        s = self._settings
        outdir = self.outdir / "extras-images" if self.outdir else s.extras_outdir(self.data_dir)
        return run_extras(self.upscalers, s, params, pictures, outdir if s.save_images else None, job)

    def _run_extras_folder(self, params: ExtrasParams, input_dir: Path, output_dir: Path, *, job: Job) -> Any:
        return run_extras_folder(self.upscalers, self._settings, params, input_dir, output_dir, job)

    # -- ControlNet -------------------------------------------------------------------------------
    def controlnet_models(self) -> list[str]:
        return self.controlnets.titles()

    def preprocessors(self) -> list[tuple[str, str | None]]:
        """(name, why it cannot run or None) for every preprocessor."""
        return [(name, availability(name, self.controlnets.annotators)) for name in PREPROCESSORS]

    def preview_control(self, unit: ControlNetUnit, image: Any, width: int, height: int) -> Any:
        """The map a unit's preprocessor makes of `image` at the output size (the unit's preview)."""
        return control_map(unit, image, width, height, self.controlnets.annotators)[0]

    def detect_control(
        self, module: str, image: Any, resolution: int, threshold_a: float | None, threshold_b: float | None
    ) -> Any:
        """The map preprocessor `module` makes of `image` at `resolution` (no resizing to an output
        size: the ControlNet extension's /controlnet/detect)."""
        return run_preprocessor(
            module, image, resolution, threshold_a, threshold_b, annotators=self.controlnets.annotators
        )

    def submit_img2img_batch(
        self,
        params: Img2ImgParams,
        input_dir: Path,
        output_dir: Path,
        mask_dir: Path | None = None,
        use_png_info: bool = False,
        control: list[ControlInput] | None = None,
        *,
        extension_args: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Job:
        """Batch img2img; the job's result is a `BatchReport`. Folders are checked now, so a typo
        is an immediate error rather than a failed job. A ControlNet unit without a picture uses
        each batch picture in turn; one with a picture uses it for every file. Each picture is an
        img2img run of its own, with the extensions' hooks (`extension_args`) firing for it."""
        for folder in filter(None, (input_dir, mask_dir)):
            if not Path(folder).is_dir():
                raise ValueError(f"folder not found: {folder}")
        job = Job("img2img", preview_every=0)
        folders = {
            "input_dir": Path(input_dir),
            "output_dir": Path(output_dir),
            "mask_dir": Path(mask_dir) if mask_dir else None,
            "use_png_info": use_png_info,
        }
        run = functools.partial(self._run_img2img_batch, control=control)
        return self._submit(job, "img2img", run, self._resolved(params), (folders,), extension_args, None)

    def _run_img2img_batch(
        self, params: Img2ImgParams, folders: dict[str, Any], *, control: Any, job: Job
    ) -> BatchReport:
        def run_one(one: Img2ImgParams, inputs: Img2ImgInputs) -> GenerationResult:
            # The batch writes its pictures to the output folder itself.
            return self._run_img2img(one, inputs, control, job=job, save_images=False)

        return run_batch(run_one, params, should_stop=lambda: job.interrupted, **folders)
