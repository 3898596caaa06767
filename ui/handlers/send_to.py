""" "Send to img2img / inpaint" under every gallery, and PNG Info → img2img: which picture, and
what the target tab's inputs receive. Plain functions, wired in `ui.app`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ui.handlers.txt2img import GenInfo


def _as_image(item: Any) -> Image.Image | None:
    """A gallery item (a (picture, caption) pair, a dict, a path or an image) as a PIL image."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image") or item.get("path") or item.get("name")
        if isinstance(item, dict):
            item = item.get("path")
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, Path)) and Path(item).is_file():
        with Image.open(item) as image:
            image.load()
            return image.copy()
    return None


def selected_picture(gallery: Any, info: GenInfo | None) -> Image.Image:
    """The picture selected in a results gallery (the first when none was clicked)."""
    items = list(gallery or [])
    if not items:
        raise ValueError("There is no picture to send: generate one first.")
    index = min(max((info.selected if info else 0), 0), len(items) - 1)
    picture = _as_image(items[index])
    if picture is None:
        raise ValueError("The selected picture cannot be read.")
    return picture


def selected_infotext(info: GenInfo | None) -> str:
    if info is None or not info.infotexts:
        return ""
    return info.infotexts[min(max(info.selected, 0), len(info.infotexts) - 1)]


def editor_value(picture: Image.Image) -> dict[str, Any]:
    """An ImageEditor value holding `picture` with nothing painted on it yet."""
    return {"background": picture, "layers": [], "composite": picture}
