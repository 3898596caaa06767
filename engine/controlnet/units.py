"""A ControlNet unit: what the user sets per unit (A1111's sd-webui-controlnet vocabulary), its
control picture, and the infotext entry the extension writes for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")  # the extension's spelling
# Which passes of a hires-fix job a unit controls (the extension's "Hires-Fix Option").
HR_OPTIONS = ("Both", "Low res only", "High res only")
DEFAULT_UNITS, MAX_UNITS = 3, 10


class ControlNetUnit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # no NaN or Infinity

    enabled: bool = True
    module: str = Field("none", description="preprocessor name, e.g. canny")
    model: str = Field("None", description="ControlNet model title (models/ControlNet)")
    weight: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    control_mode: Literal[CONTROL_MODES] = "Balanced"
    resize_mode: Literal[RESIZE_MODES] = "Crop and Resize"
    pixel_perfect: bool = False
    processor_res: int = Field(512, ge=64, le=2048)
    threshold_a: float | None = None  # the preprocessor's first threshold (canny: low), None = its default
    threshold_b: float | None = None
    hr_option: Literal[HR_OPTIONS] = "Both"

    @model_validator(mode="after")
    def _start_before_end(self) -> ControlNetUnit:
        if self.guidance_start > self.guidance_end:
            raise ValueError("guidance start must not be after guidance end")
        return self

    @property
    def soft_injection(self) -> bool:
        """Both non-balanced modes let the prompt lead: deeper residuals are scaled down."""
        return self.control_mode != "Balanced"

    @property
    def cfg_injection(self) -> bool:
        """ "ControlNet is more important": control only on the conditional pass, so CFG amplifies it."""
        return self.control_mode == "ControlNet is more important"

    def is_inert(self) -> bool:
        """A unit that cannot change the picture: skipped, so the result is bit-identical to none."""
        return not self.enabled or self.weight == 0 or self.guidance_end <= self.guidance_start

    def infotext(self, model_title: str, threshold_a: float | None, threshold_b: float | None) -> str:
        """The value of A1111's `ControlNet N` key (the extension's order and spelling)."""

        def fmt(value: Any) -> str:
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return str(value)

        parts = [
            ("Module", self.module),
            ("Model", model_title),
            ("Weight", self.weight),
            ("Resize Mode", self.resize_mode),
            ("Processor Res", self.processor_res),
            ("Threshold A", threshold_a),
            ("Threshold B", threshold_b),
            ("Guidance Start", self.guidance_start),
            ("Guidance End", self.guidance_end),
            ("Pixel Perfect", self.pixel_perfect),
            ("Control Mode", self.control_mode),
            ("Hr Option", self.hr_option if self.hr_option != "Both" else None),
        ]
        return ", ".join(f"{key}: {fmt(value)}" for key, value in parts if value is not None)


@dataclass
class ControlInput:
    """A unit with its control picture (for img2img, None means "use the img2img picture")."""

    unit: ControlNetUnit
    image: Image.Image | None = None
