"""Batch img2img: every picture of an input folder through one job's settings, written under the
same name to an output folder (A1111's img2img "Batch" tab).

Masks are matched by file stem in an optional mask folder (inpainting); optionally each picture's
own infotext (PNG Info) supplies its prompts, seed, sampler, steps and CFG scale. A file that is
not a readable picture is skipped and reported; nothing in the output folder is overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from engine.output import images as image_io
from engine.pipeline.img2img import Img2ImgInputs
from engine.pipeline.results import GenerationResult
from engine.schema.infotext import params_from_infotext, read_png_parameters
from engine.schema.params import Img2ImgParams

# What "take parameters from PNG info" takes; the size and the img2img options stay the job's.
PNG_INFO_FIELDS = ("prompt", "negative_prompt", "seed", "cfg_scale", "sampler_name", "scheduler", "steps")

RunOne = Callable[[Img2ImgParams, Img2ImgInputs], GenerationResult]


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def summary(self) -> str:
        text = f"{len(self.written)} picture(s) written"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(f"{n} ({why})" for n, why in self.skipped)
        return text


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, not halfway through the job
        return image.copy() if image.mode != "P" else image.convert("RGBA")


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for candidate in sorted(mask_dir.glob(f"{stem}.*")):
        if candidate.is_file():
            return candidate
    return None


def _with_png_info(params: Img2ImgParams, picture_path: Path) -> Img2ImgParams:
    text = read_png_parameters(picture_path)
    if not text:
        return params
    parsed, _ = params_from_infotext(text, params)
    return params.model_copy(update={name: getattr(parsed, name) for name in PNG_INFO_FIELDS})


def run_batch(
    run_one: RunOne,
    params: Img2ImgParams,
    input_dir: Path,
    output_dir: Path,
    *,
    mask_dir: Path | None = None,
    use_png_info: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> BatchReport:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise ValueError(f"input folder not found: {input_dir}")
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise ValueError(f"mask folder not found: {mask_dir}")
    if output_dir.resolve() == input_dir.resolve():
        raise ValueError("the output folder must differ from the input folder")
    report = BatchReport()
    for path in sorted(p for p in input_dir.iterdir() if p.is_file()):
        if should_stop():
            report.interrupted = True
            break
        try:
            picture = _open(path)
        except Exception as exc:  # untrusted files: not an image, truncated, too large, ...
            report.skipped.append((path.name, f"not a readable picture: {type(exc).__name__}"))
            continue
        mask = None
        if mask_dir is not None:
            mask_path = _find_mask(Path(mask_dir), path.stem)
            if mask_path is None:
                report.notes.append(f"{path.name}: no mask, processed as img2img")
            else:
                try:
                    mask = _open(mask_path)
                except Exception as exc:
                    report.skipped.append(
                        (path.name, f"unreadable mask {mask_path.name}: {type(exc).__name__}")
                    )
                    continue
        job_params = _with_png_info(params, path) if use_png_info else params
        try:
            result = run_one(job_params, Img2ImgInputs([picture], mask))
        except ValueError as exc:
            report.skipped.append((path.name, str(exc)))
            continue
        report.notes.extend(f"{path.name}: {note}" for note in result.notes)
        many = len(result.images) > 1
        for i, (image, infotext) in enumerate(zip(result.images, result.infotexts, strict=True)):
            stem = f"{path.stem}-{i}" if many else path.stem
            report.written.append(image_io.save_image_named(image, output_dir, stem, infotext=infotext))
        if result.interrupted:
            report.interrupted = True
            break
    return report
