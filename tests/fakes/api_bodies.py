"""What API tests send and read back: pictures as base64 PNG, and the first infotext of an answer."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def picture(answer) -> Image.Image:
    """The first picture of a txt2img/img2img answer."""
    return unb64(answer.json()["images"][0])


def infotext(answer) -> str:
    """The first picture's infotext of a successful txt2img/img2img answer."""
    assert answer.status_code == 200, answer.text
    return json.loads(answer.json()["info"])["infotexts"][0]
