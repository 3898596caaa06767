"""The Upscaling tab's service (A1111's "Extras") and the picture upscalers scripts use. Composed
into the Engine (`engine.upscaling`); its jobs queue on the Engine's one job queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.schema.settings import Settings
from engine.service.jobs import Job, JobQueue
from engine.upscale.extras import ExtrasParams, ExtrasResult, run_extras, run_extras_folder
from engine.upscale.upscalers import UpscalerLibrary


class Upscaling:
    def __init__(
        self,
        upscalers: UpscalerLibrary,
        queue: JobQueue,
        settings: Callable[[], Settings],
        outdir: Callable[[], Path | None],
    ):
        """`settings()`: the Settings now; `outdir()`: where extras-images go (None: not saved)."""
        self.upscalers, self.queue = upscalers, queue
        self._settings, self._outdir = settings, outdir

    def names(self) -> list[str]:
        return self.upscalers.names()

    def upscale(self, picture: Any, scale: float, upscaler: str) -> Any:
        """`picture` enlarged `scale` times by `upscaler` (a name of `names()`)."""
        names = self.upscalers.names()
        if upscaler not in names:
            raise ValueError(f"unknown upscaler {upscaler!r} (known: {', '.join(names)})")
        return self.upscalers.upscale(picture, scale, upscaler)

    def submit(self, params: ExtrasParams, pictures: list[Any]) -> Job:
        """Upscale pictures (saved under extras-images); the job's result is an ExtrasResult."""
        if not pictures:
            raise ValueError("Upscaling: add a picture first")
        return self.queue.submit(Job("extras"), self._run, params, pictures)

    def submit_folder(self, params: ExtrasParams, input_dir: Path, output_dir: Path) -> Job:
        """Upscale every picture of a folder into another, under the same names (a BatchReport)."""
        if not Path(input_dir).is_dir():
            raise ValueError(f"folder not found: {input_dir}")
        if Path(output_dir).resolve() == Path(input_dir).resolve():
            raise ValueError("the output folder must differ from the input folder")
        return self.queue.submit(Job("extras"), self._run_folder, params, Path(input_dir), Path(output_dir))

    def _run(self, params: ExtrasParams, pictures: list[Any], *, job: Job) -> ExtrasResult:
        settings = self._settings()
        return run_extras(self.upscalers, settings, params, pictures, self._outdir(), job)

    def _run_folder(self, params: ExtrasParams, input_dir: Path, output_dir: Path, *, job: Job) -> Any:
        return run_extras_folder(self.upscalers, self._settings(), params, input_dir, output_dir, job)
