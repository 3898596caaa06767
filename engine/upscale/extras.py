"""The Upscaling tab's job (A1111's "Extras"): scale by / scale to (optionally cropped to fit),
upscaler 1, and upscaler 2 blended in at its visibility. The result keeps the source picture's
infotext, followed by A1111's `Postprocess …` keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from engine.output import images as image_io
from engine.pipeline.img2img_batch import BatchReport
from engine.schema.infotext import params_text, read_png_parameters
from engine.service.memory import OUT_OF_MEMORY_ERRORS
from engine.upscale.upscalers import UpscalerLibrary


class ExtrasParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # no NaN or Infinity

    resize_mode: int = Field(0, ge=0, le=1, description="0: scale by, 1: scale to")
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0, allow_inf_nan=False)
    upscaling_resize_w: int = Field(512, ge=64, le=16384)
    upscaling_resize_h: int = Field(512, ge=64, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str = "Lanczos"
    upscaler_2: str = "None"
    upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)


@dataclass
class ExtrasResult:
    """Shaped like GenerationResult where the UI reads it (images, infotexts, seeds, notes)."""

    images: list[Any] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    interrupted: bool = False


def target_size(image: Image.Image, params: ExtrasParams) -> tuple[float, tuple[int, int]]:
    """(the scale the upscaler runs at, the final size)."""
    if params.resize_mode == 0:
        scale = params.upscaling_resize
        return scale, (round(image.width * scale), round(image.height * scale))
    w, h = params.upscaling_resize_w, params.upscaling_resize_h
    scale = max(w / image.width, h / image.height)  # cover the box; cropped to it when asked
    if params.upscaling_crop:
        return scale, (w, h)
    return scale, (round(image.width * scale), round(image.height * scale))


def upscale_one(
    library: UpscalerLibrary,
    image: Image.Image,
    params: ExtrasParams,
    *,
    max_pixels: int,
    tile: int | None = None,
    overlap: int | None = None,
    ensemble: str | None = None,
) -> tuple[Image.Image, dict[str, object]]:
    """(the upscaled picture, the `Postprocess …` keys for its infotext). Unset tile / overlap /
    self-ensemble: the library's (the app's Settings)."""
    scale, size = target_size(image, params)
    if size[0] * size[1] > max_pixels:
        raise ValueError(
            f"the result would be {size[0]}×{size[1]}; the limit is {max_pixels:,} pixels (Settings)"
        )
    info: dict[str, object] = {}
    if params.resize_mode == 0:
        info["Postprocess upscale by"] = params.upscaling_resize
    else:
        info["Postprocess upscale to"] = f"{params.upscaling_resize_w}x{params.upscaling_resize_h}"
    if params.upscaler_1 == "None":
        return image.convert("RGB"), {}
    source = image.convert("RGB")
    result = library.upscale(source, scale, params.upscaler_1, tile, overlap, ensemble)
    info["Postprocess upscaler"] = params.upscaler_1
    if params.upscaler_2 != "None" and params.upscaler_2_visibility > 0:
        second = library.upscale(source, scale, params.upscaler_2, tile, overlap, ensemble)
        second = second.resize(result.size)
        result = Image.blend(result, second, params.upscaler_2_visibility)
        info["Postprocess upscaler 2"] = params.upscaler_2
        info["Postprocess upscaler 2 visibility"] = params.upscaler_2_visibility
    if params.resize_mode == 1 and params.upscaling_crop and result.size != size:
        left, top = (result.width - size[0]) // 2, (result.height - size[1]) // 2
        result = result.crop((left, top, left + size[0], top + size[1]))
        info["Postprocess crop to"] = f"{size[0]}x{size[1]}"
    return result, info


def extras_infotext(source: Image.Image, info: dict[str, object]) -> str:
    """The source's parameters with the Postprocess keys appended to its last line."""
    keys = params_text(info)
    existing = (read_png_parameters(source) or "").rstrip()
    if not keys:
        return existing
    return f"{existing}, {keys}" if existing else keys


def _upscale(library: UpscalerLibrary, settings: Any, params: ExtrasParams, picture: Image.Image):
    image, info = upscale_one(
        library,
        picture,
        params,
        max_pixels=settings.upscale_max_pixels,
    )
    return image, extras_infotext(picture, info)


def run_extras(
    library: UpscalerLibrary,
    settings: Any,
    params: ExtrasParams,
    pictures: list[Any],
    outdir: Path | None,
    job: Any,
) -> ExtrasResult:
    """Upscale `pictures`, saving each as `outdir/<date>/NNNNN.png` (outdir None: not saved)."""
    result = ExtrasResult()
    job.begin(1, len(pictures))
    for picture in pictures:
        job.check()
        image, infotext = _upscale(library, settings, params, picture)
        path = image_io.save_image(image, outdir, seed=None, infotext=infotext) if outdir else None
        result.images.append(image)
        result.infotexts.append(infotext)
        result.paths.append(path)
        job.step_done()
    return result


def run_extras_folder(
    library: UpscalerLibrary, settings: Any, params: ExtrasParams, input_dir: Path, output_dir: Path, job: Any
) -> BatchReport:
    """Every picture of `input_dir` upscaled into `output_dir` under its own name; unreadable files
    are skipped and reported, existing files never replaced."""
    report = BatchReport()
    files = sorted(p for p in input_dir.iterdir() if p.is_file())
    job.begin(1, len(files))
    for path in files:
        if job.interrupted:
            report.interrupted = True
            break
        try:
            with Image.open(path) as opened:
                opened.load()
                picture = opened.copy()
            image, infotext = _upscale(library, settings, params, picture)
        except ValueError as exc:
            report.skipped.append((path.name, str(exc)))
        except OUT_OF_MEMORY_ERRORS:  # not the file's fault: the job ends and says what to try
            raise
        except Exception as exc:  # untrusted files: not an image, truncated, too large
            report.skipped.append((path.name, f"not a readable picture: {type(exc).__name__}"))
        else:
            report.written.append(image_io.save_image_named(image, output_dir, path.stem, infotext=infotext))
        job.step_done()
    return report
