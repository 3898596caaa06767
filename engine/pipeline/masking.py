"""Inpainting masks in pixel space: reading, blurring, cropping, filling, and the final overlay.

Convention: a mask is an 8-bit "L" image where 255 means "repaint this pixel" and 0 "keep it",
the way users paint it. The geometry follows A1111 (mask blur as a separable Gaussian, "only
masked" crop with padding grown to the output's aspect ratio, the overlay that puts every kept
pixel of the original back exactly); the code is ours.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

Region = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive), PIL's crop box


def binary_mask(mask: Image.Image) -> Image.Image:
    """An uploaded or painted mask as a 0/255 "L" image.

    The brush editor hands over RGBA strokes on a transparent layer: there the alpha channel is
    the mask. A plain upload is white-on-black: there the brightness is."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1] != (255, 255):
        gray = mask.getchannel("A")
    else:
        gray = mask.convert("L")
    return gray.point(lambda v: 255 if v > 128 else 0)


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int | None = None) -> Image.Image:
    """Gaussian blur of σ = blur px, horizontal then vertical (A1111's kernel size 2⌊2.5σ+½⌋+1)."""
    blur_y = blur_x if blur_y is None else blur_y
    array = np.array(mask.convert("L"))
    if blur_x > 0:
        k = 2 * int(2.5 * blur_x + 0.5) + 1
        array = cv2.GaussianBlur(array, (k, 1), blur_x)
    if blur_y > 0:
        k = 2 * int(2.5 * blur_y + 0.5) + 1
        array = cv2.GaussianBlur(array, (1, k), blur_y)
    return Image.fromarray(array)


def is_empty(mask: Image.Image) -> bool:
    return mask.convert("L").getbbox() is None


def crop_region(mask: Image.Image, padding: int) -> Region | None:
    """The box around every masked pixel, grown by `padding` px and clipped to the picture."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (
        max(x1 - padding, 0),
        max(y1 - padding, 0),
        min(x2 + padding, mask.width),
        min(y2 + padding, mask.height),
    )


def expand_to_aspect(region: Region, width: int, height: int, image_w: int, image_h: int) -> Region:
    """Grow `region` along its short side until it has the aspect ratio width:height, staying in
    the picture where it can: the crop is then resized to width × height without distortion."""
    x1, y1, x2, y2 = region

    def grow(lo: int, hi: int, target: int, limit: int) -> tuple[int, int]:
        extra = max(0, target - (hi - lo))
        lo, hi = lo - extra // 2, hi + extra - extra // 2
        if hi > limit:  # shift back inside, then clip what still does not fit
            lo, hi = lo - (hi - limit), limit
        if lo < 0:
            hi, lo = min(hi - lo, limit), 0
        return lo, hi

    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = grow(y1, y2, round((x2 - x1) * height / width), image_h)
    else:
        x1, x2 = grow(x1, x2, round((y2 - y1) * width / height), image_w)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """ "Masked content: fill": the masked area painted with the colours around it.

    Normalised convolution at shrinking radii: blur(image·keep) / blur(keep) is the average kept
    colour near each pixel; coarse estimates cover the whole hole, finer ones overwrite them where
    kept pixels are close. Kept pixels stay as they were (blended across a soft mask edge)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    keep = 1.0 - np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    estimate = np.zeros_like(rgb)
    for radius in (256, 64, 16, 4, 2):
        weight = cv2.GaussianBlur(keep, (0, 0), radius)
        known = weight > 1e-4
        total = cv2.GaussianBlur(rgb * keep[..., None], (0, 0), radius)
        estimate[known] = total[known] / weight[known][:, None]
    if not (keep > 0).any():  # nothing kept at all: fill with mid-grey
        estimate[:] = 127.5
    out = rgb * keep[..., None] + estimate * (1.0 - keep[..., None])
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def overlay(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original as an RGBA layer, opaque where the mask keeps it: composited over the result
    at the end, it restores every kept pixel exactly and blends the blurred edge."""
    layer = image.convert("RGBA")
    alpha = Image.eval(mask_for_overlay.convert("L"), lambda v: 255 - v)
    layer.putalpha(alpha)
    return layer


def sharpen_for_overlay(blurred: Image.Image) -> Image.Image:
    """Whole-picture inpainting overlays the mask at twice its blurred value (A1111): the seam is
    blended only on the outer half of the blur, so the repainted area is not washed out."""
    return blurred.point(lambda v: min(255, 2 * v))


def apply_overlay(
    result: Image.Image, layer: Image.Image | None, paste_to: Region | None = None
) -> Image.Image:
    """Put the generated picture back: into the crop box it came from (only-masked inpainting),
    then the kept original over it."""
    if paste_to is not None and layer is not None:
        x1, y1, x2, y2 = paste_to
        base = Image.new("RGBA", layer.size)
        base.paste(result.convert("RGBA").resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        result = base
    if layer is None:
        return result.convert("RGB")
    out = result.convert("RGBA")
    out.alpha_composite(layer)
    return out.convert("RGB")


def sketch_to_mask(original: Image.Image, sketched: Image.Image, transparency: int, blur: int):
    """Inpaint sketch: the strokes are where the sketch differs from the original. Returns (the
    picture to start from, the mask). `transparency` (0-100 %) fades the mask, so the strokes'
    colours are only partly kept, as A1111's "Mask transparency"."""
    original = original.convert("RGB")
    sketched = sketched.convert("RGB").resize(original.size)
    changed = np.any(np.asarray(sketched) != np.asarray(original), axis=-1)
    mask = Image.fromarray(changed.astype(np.uint8) * 255, "L")
    mask = ImageEnhance.Brightness(mask).enhance(1 - transparency / 100)
    soft = ImageFilter.GaussianBlur(blur)
    start = Image.composite(sketched.filter(soft), original, mask.filter(soft))
    return start, mask
