"""Saving images (atomically, with their infotext) and building grids.

Saved files follow A1111's layout, `outdir/YYYY-MM-DD/NNNNN-SEED.png`, where NNNNN counts on from
the highest number already in the day folder. A file is fully written and fsynced under a temp
name first, then hard-linked to its final name: a link never replaces an existing file, so two
savers (threads or processes) racing for one number cannot overwrite each other; the loser
takes the next number. Readers never see a half-written PNG.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_NUMBER_RE = re.compile(r"^(\d+)")
_TEMP_PREFIX = ".tmp-"
_UNSAFE_SUFFIX_RE = re.compile(r"[\\/\x00-\x1f:*?\"<>|]")  # path separators and Windows-illegal chars


def next_sequence_number(folder: Path) -> int:
    """1 + the highest leading number of a file name in `folder` (0 when there is none)."""
    highest = -1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        match = _NUMBER_RE.match(name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _png_bytes(image: Image.Image, infotext: str) -> bytes:
    info = PngInfo()
    # add_text falls back to an iTXt (UTF-8) chunk by itself when the text is not Latin-1.
    info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _fsync_dir(folder: Path) -> None:
    # Makes the new directory entry durable too; not possible on every platform, so best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Give the finished temp file its final name; FileExistsError when the name is taken."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links (FAT, some network shares): reserve the name
        # exclusively, then atomically swap the finished file over the empty reservation.
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        try:
            os.replace(tmp, final)
        except BaseException:
            final.unlink(missing_ok=True)  # never leave an empty placeholder behind
            raise


class SaveError(OSError):
    """A picture could not be written. The message says where and why; nothing partial is left
    behind (the temp file is removed, and a final name only ever points at a complete file)."""

    def __str__(self) -> str:
        return str(self.strerror)

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
}


@contextlib.contextmanager
def _clear_failure(folder: Path):
    try:
        yield
    except SaveError:
        raise
    except OSError as exc:
        why = _WHY.get(exc.errno, exc.strerror or str(exc) or type(exc).__name__)
        raise SaveError(
            exc.errno, f"could not save the picture in {folder}: {why}; nothing was saved"
        ) from exc


def save_image(
    image: Image.Image,
    outdir: Path,
    *,
    seed: int | None,
    infotext: str,
    basename_suffix: str = "",
) -> Path:
    """Write `image` as `outdir/<today>/NNNNN-<seed><suffix>.png` (no seed: `NNNNN<suffix>.png`,
    as A1111 names upscaled pictures) with its 'parameters' chunk."""
    folder = Path(outdir) / date.today().isoformat()
    suffix = _UNSAFE_SUFFIX_RE.sub("_", basename_suffix)
    data = _png_bytes(image, infotext)  # encode before taking a number: keeps the race window short
    with _clear_failure(folder):
        return _save_numbered(data, folder, seed, suffix)


def _save_numbered(data: bytes, folder: Path, seed: int | None, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX, suffix=".png")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; saved images should be readable like any file
        number = next_sequence_number(folder)
        while True:
            final = folder / (
                f"{number:05d}-{seed}{suffix}.png" if seed is not None else f"{number:05d}{suffix}.png"
            )
            try:
                _publish(tmp, final)
                break
            except FileExistsError:
                number += 1  # someone took this number first: never overwrite, take the next
        _fsync_dir(folder)
        return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_image_named(image: Image.Image, folder: Path, stem: str, *, infotext: str) -> Path:
    """Write `folder/<stem>.png` (batch img2img keeps the input's name). An existing file is never
    replaced: the name then gets `-1`, `-2`, ... ."""
    folder = Path(folder)
    stem = _UNSAFE_SUFFIX_RE.sub("_", stem) or "image"
    with _clear_failure(folder):
        return _save_as(_png_bytes(image, infotext), folder, stem)


def _save_as(data: bytes, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX, suffix=".png")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        for n in range(100000):
            final = folder / (f"{stem}.png" if n == 0 else f"{stem}-{n}.png")
            try:
                _publish(tmp, final)
                break
            except FileExistsError:
                continue
        _fsync_dir(folder)
        return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def grid_rows(count: int) -> int:
    """A1111's automatic row count: the largest divisor of `count` not above its square root."""
    rows = max(1, math.isqrt(count))
    while count % rows:
        rows -= 1
    return rows


def image_grid(images: Sequence[Image.Image], rows: int | None = None) -> Image.Image:
    """Paste images row by row into one near-square grid (cells sized to the largest image)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    rows = grid_rows(len(images)) if rows is None or rows <= 0 else min(rows, len(images))
    cols = math.ceil(len(images) / rows)
    rows = math.ceil(len(images) / cols)  # drop rows a too-large request would leave empty
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    mode = images[0].mode if images[0].mode in ("RGB", "RGBA") else "RGB"
    grid = Image.new(mode, (cols * cell_w, rows * cell_h))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * cell_w, (i // cols) * cell_h))
    return grid


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB of any image; transparent pixels sit on `background` (A1111's img2img background)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background)
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def resize_image(
    mode: int,
    image: Image.Image,
    width: int,
    height: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """A1111's resize modes for img2img inputs (and their masks):

    0 Just resize: stretch to width × height.
    1 Crop and resize: scale to cover, crop the centre (keeps the aspect ratio, loses edges).
    2 Resize and fill: scale to fit inside, centre, fill the bands by stretching the edge pixels.
    3 Just resize (latent upscale): handled in latent space by the pipeline; here as mode 0.
    """
    if mode in (0, 3) or image.size == (width, height):
        return image.resize((width, height), resample)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        scale = width / image.width if ratio > src_ratio else height / image.height
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        resized = image.resize((w, h), resample)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode != 2:
        raise ValueError(f"unknown resize mode {mode}")
    scale = width / image.width if ratio < src_ratio else height / image.height
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resized = image.resize((w, h), resample)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    canvas.paste(resized, (left, top))
    # Fill each empty band with the nearest edge row/column of the picture, stretched.
    if top > 0:
        canvas.paste(resized.crop((0, 0, w, 1)).resize((w, top)), (left, 0))
    if top + h < height:
        canvas.paste(resized.crop((0, h - 1, w, h)).resize((w, height - top - h)), (left, top + h))
    if left > 0:
        canvas.paste(resized.crop((0, 0, 1, h)).resize((left, h)), (0, top))
    if left + w < width:
        canvas.paste(resized.crop((w - 1, 0, w, h)).resize((width - left - w, h)), (left + w, top))
    return canvas
