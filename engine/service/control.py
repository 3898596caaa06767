"""ControlNet outside a generation: the model list, which preprocessors can run, a unit's preview
map and the API's /controlnet/detect. Composed into the Engine (`engine.control`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.controlnet.apply import control_map
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.preprocessors import PREPROCESSORS, availability
from engine.controlnet.preprocessors import run as run_preprocessor
from engine.controlnet.units import ControlNetUnit
from engine.models.manager import release_memory
from engine.service.memory import OUT_OF_MEMORY_ERRORS, out_of_memory


class ControlTools:
    def __init__(self, controlnets: ControlNetLibrary):
        self.controlnets = controlnets

    def models(self) -> list[str]:
        return self.controlnets.titles()

    def preprocessors(self) -> list[tuple[str, str | None]]:
        """(name, why it cannot run or None) for every preprocessor."""
        return [(name, availability(name, self.controlnets.annotators)) for name in PREPROCESSORS]

    def preview(self, unit: ControlNetUnit, image: Any, width: int, height: int) -> Any:
        """The map a unit's preprocessor makes of `image` at the output size (the unit's preview)."""
        return _within_memory(lambda: control_map(unit, image, width, height, self.controlnets.annotators)[0])

    def detect(
        self, module: str, image: Any, resolution: int, threshold_a: float | None, threshold_b: float | None
    ) -> Any:
        """The map preprocessor `module` makes of `image` at `resolution` (no resizing to an output
        size: the ControlNet extension's /controlnet/detect)."""

        def detect() -> Any:
            annotators = self.controlnets.annotators
            return run_preprocessor(module, image, resolution, threshold_a, threshold_b,
                                    annotators=annotators)  # fmt: skip

        return _within_memory(detect)


def _within_memory(run: Callable[[], Any]) -> Any:
    """`run()`; running out of memory ends in `OutOfMemory` naming what to try, with the memory
    freed (previews and /controlnet/detect run beside the job queue, so they do their own)."""
    try:
        return run()
    except OUT_OF_MEMORY_ERRORS as exc:
        error = out_of_memory("preprocessor", exc)  # only its text: the traceback holds the tensors
    release_memory()
    raise error
