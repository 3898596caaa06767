"""Browser values → engine values: numbers as Gradio hands them over, and uploaded pictures decoded
with a clear message for a bad one. Shared by every tab's handlers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from engine.pipeline.img2img import MAX_INPUT_PIXELS


def as_number(value: Any) -> Any:
    """Gradio hands numbers over as floats; keep whole ones as int so int fields accept them, and
    leave anything else untouched so the schema rejects it with its own message."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def open_picture(value: Any, what: str) -> Image.Image | None:
    """An uploaded picture (a file path from Gradio, or an image already): decoded here, so a
    corrupt or non-image upload is a clear message and an oversized one is refused before it is
    decoded."""
    if value is None or isinstance(value, Image.Image):
        return value
    try:
        with Image.open(value) as image:
            if image.width * image.height > MAX_INPUT_PIXELS:
                size = f"{image.width}×{image.height}"
                raise ValueError(f"{what}: {size} is too large; the limit is {MAX_INPUT_PIXELS:,} pixels")
            image.load()
            return image.copy()
    except ValueError:
        raise
    except Exception as exc:  # not an image, truncated, a decompression bomb, ...
        raise ValueError(
            f"{what}: cannot read {Path(str(value)).name} as a picture ({type(exc).__name__})"
        ) from exc
