"""ControlNet units in the denoising loop.

`prepare_units` turns each active unit into a control map at the output size and a loaded model;
`ControlNetStack` is called inside the UNet function at every model evaluation and returns the
summed residuals for the UNet's down blocks and mid block. Per unit, as in A1111's extension:

- it acts while the step's fraction of the run lies in [guidance start, guidance end);
- "Balanced" scales all 13 residuals by the weight; the two other modes scale residual i by
  weight · 0.825^(12 − i) (deep blocks weaker, the prompt leads); "ControlNet is more important"
  also leaves the unconditional rows of the CFG batch uncontrolled, so CFG amplifies the control;
- an inert unit (disabled, weight 0, end ≤ start) is dropped before sampling, so the result is
  bit-identical to a run without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.conditioning.text_cond import TextCond
from engine.controlnet import preprocessors
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import RESIZE_MODES, ControlInput, ControlNetUnit
from engine.output import images as image_io

SOFT_BASE = 0.825  # A1111's "soft injection" decay per block, from the ControlNet reference code


@dataclass
class PreparedUnit:
    index: int  # the unit's number in the UI (infotext "ControlNet N")
    unit: ControlNetUnit
    model: Any  # diffusers ControlNetModel
    title: str  # "name [hash]"
    control_map: Image.Image  # what the model sees, at the output size
    hint: torch.Tensor  # (1, 3, H, W) in [0, 1]
    threshold_a: float | None
    threshold_b: float | None
    source: Image.Image | None = None  # the control picture before preprocessing

    def infotext(self) -> str:
        return self.unit.infotext(self.title, self.threshold_a, self.threshold_b)


def control_map(
    unit: ControlNetUnit, image: Image.Image, width: int, height: int, annotators: Any
) -> tuple[Image.Image, float | None, float | None]:
    """The unit's preprocessed map at width × height (its preview), and the thresholds used."""
    a, b = preprocessors.thresholds(unit.module, unit.threshold_a, unit.threshold_b) if (
        unit.module in preprocessors.PREPROCESSORS
    ) else (None, None)  # fmt: skip
    resolution = (
        preprocessors.pixel_perfect_resolution(image, width, height, unit.resize_mode)
        if unit.pixel_perfect
        else unit.processor_res
    )
    detected = preprocessors.run(unit.module, image, resolution, a, b, annotators)
    mode = RESIZE_MODES.index(unit.resize_mode)  # same order as engine.output.images' modes 0-2
    if len(detected.convert("L").getcolors(3) or ()) in (1, 2):
        return _resize_binary(mode, detected, width, height), a, b
    return image_io.resize_image(mode, detected, width, height), a, b  # smooth maps: depth, normals, tiles


def _resize_binary(mode: int, detected: Image.Image, width: int, height: int) -> Image.Image:
    """Edge and line maps stay binary and keep their thin lines: area-average, then any output
    pixel at least a quarter covered by a line is a line (nearest or Lanczos would drop or blur
    1-px lines when the map is larger than the output)."""
    averaged = image_io.resize_image(mode, detected, width, height, Image.Resampling.BOX)
    return averaged.point(lambda v: 255 if v >= 64 else 0)


def prepare_units(
    inputs: list[ControlInput],
    model: Any,
    library: ControlNetLibrary,
    width: int,
    height: int,
    fallback_image: Image.Image | None = None,
) -> list[PreparedUnit]:
    """Active units, ready to sample with. ValueError (naming the unit) for anything missing."""
    prepared = []
    for index, control in enumerate(inputs):
        unit = control.unit
        if unit.is_inert():
            continue
        label = f"ControlNet unit {index}"
        image = control.image if control.image is not None else fallback_image
        if image is None:
            raise ValueError(f"{label}: no control picture (upload one, or use it in img2img)")
        if unit.model in ("", "None", None):
            raise ValueError(f"{label}: choose a ControlNet model")
        reason = preprocessors.availability(unit.module, library.annotators)
        if reason is not None:
            raise ValueError(f"{label}: {reason}")
        cn, title = library.load(unit.model, model.unet, model.device, model.dtype, model.spec.label)
        cmap, a, b = control_map(unit, image, width, height, library.annotators)
        prepared.append(PreparedUnit(index, unit, cn, title, cmap, _hint(cmap, model.device), a, b, image))
    return prepared


def crop_inputs(
    inputs: list[ControlInput], box: tuple[int, int, int, int], source_size: tuple[int, int]
) -> list[ControlInput]:
    """ "Inpaint only masked" samples a crop of the img2img picture; a unit's own control picture
    is taken to be aligned with that picture, so it is stretched to the picture's size and cut to
    the same box (a unit without a picture gets the cropped img2img picture anyway)."""
    return [
        replace(c, image=c.image.convert("RGB").resize(source_size, Image.Resampling.LANCZOS).crop(box))
        if c.image is not None
        else c
        for c in inputs
    ]


def _hint(cmap: Image.Image, device: Any) -> torch.Tensor:
    """A control map as the model's input: (1, 3, H, W) in [0, 1]."""
    array = np.asarray(cmap.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(device)


def hires_units(units: list[PreparedUnit], width: int, height: int, annotators: Any) -> list[PreparedUnit]:
    """The units that act in hires fix's second pass, their maps made again from the control
    picture at the second pass's size (as the extension does: a map resized up would blur edges)."""
    second = []
    for p in units:
        if p.unit.hr_option == "Low res only":
            continue
        cmap, a, b = control_map(p.unit, p.source, width, height, annotators)
        second.append(
            replace(p, control_map=cmap, hint=_hint(cmap, p.hint.device), threshold_a=a, threshold_b=b)
        )
    return second


def first_pass_units(units: list[PreparedUnit], hires: bool) -> list[PreparedUnit]:
    """The units that act in the first pass: with hires fix on, all but "High res only" ones
    (without it there is only one pass, and every unit acts in it)."""
    return [p for p in units if not hires or p.unit.hr_option != "High res only"]


class ControlNetStack:
    """Summed ControlNet residuals for a UNet call, given the run's σ schedule."""

    def __init__(self, units: list[PreparedUnit], timesteps: torch.Tensor):
        # `timesteps`: the model timestep of each step of the run (the UNet sees t, not σ).
        self.units = units
        self.timesteps = timesteps.detach().float().cpu()

    def fraction(self, t: torch.Tensor, value: float | None = None) -> float:
        """How far through the run this evaluation is: step index / number of steps. `value`: the
        timestep as a number where the caller has it (reading it off a GPU tensor waits for the GPU)."""
        value = float(t.reshape(-1)[0]) if value is None else value
        steps = len(self.timesteps)
        index = int((self.timesteps >= value - 1e-3).sum()) - 1
        return max(0, min(index, steps - 1)) / steps

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: TextCond,
        uncond_count: int = 0,
        unet_kwargs: dict[str, Any] | None = None,
        t_value: float | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """The summed residuals of the units active at this step. `unet_kwargs`: the family's
        extra UNet inputs (SDXL's pooled text and size ids), which an SDXL ControlNet takes too."""
        hidden = TextCond.of(cond).hidden
        progress = self.fraction(t, t_value)
        down_sum: list[torch.Tensor] | None = None
        mid_sum: torch.Tensor | None = None
        for p in self.units:
            if not p.unit.guidance_start <= progress < p.unit.guidance_end:
                continue
            hint = p.hint.to(x).repeat(x.shape[0] // p.hint.shape[0], 1, 1, 1)
            dtype = p.model.dtype
            down, mid = p.model(
                x.to(dtype), t, encoder_hidden_states=hidden.to(dtype), controlnet_cond=hint.to(dtype),
                conditioning_scale=1.0, return_dict=False, **(unet_kwargs or {}),
            )  # fmt: skip
            residuals = [*down, mid]
            count = len(residuals)
            for i, r in enumerate(residuals):
                scale = p.unit.weight * (SOFT_BASE ** float(count - 1 - i) if p.unit.soft_injection else 1.0)
                r = r.float() * scale
                if p.unit.cfg_injection and uncond_count:
                    r[:uncond_count] = 0  # the unconditional pass runs without control
                residuals[i] = r
            *down, mid = residuals
            down_sum = down if down_sum is None else [a + b for a, b in zip(down_sum, down, strict=True)]
            mid_sum = mid if mid_sum is None else mid_sum + mid
        if down_sum is None:
            return None
        return down_sum, mid_sum


def control_stack(model: Any, units: list[PreparedUnit], sigmas: torch.Tensor) -> ControlNetStack | None:
    """The run's ControlNet residual source (None without active units)."""
    if not units:
        return None
    timesteps = model.model_sigmas().sigma_to_t(sigmas[:-1].float().cpu())
    return ControlNetStack(units, timesteps)


def control_infotext(units: list[PreparedUnit]) -> dict[str, object]:
    """A1111's extension writes one `ControlNet N` key per active unit."""
    return {f"ControlNet {p.index}": p.infotext() for p in units}
