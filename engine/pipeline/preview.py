"""Live previews without the VAE: A1111's "Approx cheap", a per-pixel linear map latent → RGB.

A full VAE decode every few steps is a decode-sized memory spike in the middle of sampling (and,
under the medvram plan, a swap of the UNet out and back). A1111 ships one hand-fitted 4×3 matrix per
latent space; here the map is fitted to whatever VAE the model has, the first time it is needed:
its encoder reads a colour chart, and least squares gives the matrix and offset that take each
latent pixel to the chart's colour under it. So the built-in model, SD 1.x, SDXL and any later
family get a matching cheap preview with no table to keep. The preview is latent-sized (1/8 of the
picture, shown scaled up), like A1111's.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import torch
from PIL import Image

FULL, APPROX_CHEAP = "Full", "Approx cheap"
PREVIEW_KINDS = (APPROX_CHEAP, FULL)
PATCH = 32  # px per colour patch: 4×4 latent pixels on an ×8 VAE, the inner 2×2 free of its borders

_maps: weakref.WeakKeyDictionary[Any, tuple[torch.Tensor, torch.Tensor]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def colour_chart() -> tuple[torch.Tensor, list[tuple[float, float, float]]]:
    """[1, 3, H, W] in [0, 1] of flat patches (6 hues × 2 saturations across, 4 lightnesses and
    grey down, plus black and white), and the colours in patch order, row by row."""
    colours: list[tuple[float, float, float]] = []
    for light in (0.2, 0.4, 0.6, 0.8):
        for hue in range(6):
            for saturation in (1.0, 0.45):
                colours.append(_hsl(hue / 6, saturation, light))
    colours += [(v, v, v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)] + [(0.0, 0.0, 0.0)] * 7
    columns = 12
    rows = len(colours) // columns
    chart = torch.zeros(3, rows * PATCH, columns * PATCH)
    for index, colour in enumerate(colours):
        top, left = index // columns * PATCH, index % columns * PATCH
        chart[:, top : top + PATCH, left : left + PATCH] = torch.tensor(colour)[:, None, None]
    return chart[None], colours


def _hsl(hue: float, saturation: float, light: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hls_to_rgb(hue, light, saturation)


@torch.no_grad()
def fit(vae: Any, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix [C, 3], offset [3]) taking a scaled latent pixel to its RGB in [0, 1]."""
    chart, colours = colour_chart()
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = vae.encode((chart * 2 - 1).to(device, dtype)).latent_dist.mean.float().cpu()
    latents = (latents - (getattr(vae.config, "shift_factor", None) or 0.0)) * vae.config.scaling_factor
    cells, columns = PATCH // scale, 12
    rows, targets = [], []
    for index, colour in enumerate(colours):  # the latent pixels inside each patch, off its borders
        top, left = index // columns * cells, index % columns * cells
        inner = latents[
            0, :, top + cells // 4 : top + cells - cells // 4, left + cells // 4 : left + cells - cells // 4
        ]
        rows.append(inner.flatten(1).T)
        targets.append(torch.tensor(colour).expand(rows[-1].shape[0], 3))
    inputs = torch.cat(rows)
    inputs = torch.cat([inputs, torch.ones(len(inputs), 1)], 1)
    solution = torch.linalg.lstsq(inputs.double(), torch.cat(targets).double()).solution.float()
    return solution[:-1], solution[-1]


def approx_cheap(model: Any, latents: torch.Tensor) -> Image.Image:
    """The first latent of `latents` (scaled, as the sampler holds them) as a small RGB picture."""
    with _lock:
        if model.vae not in _maps:
            _maps[model.vae] = fit(model.vae, model.device, model.vae_dtype)
        matrix, offset = _maps[model.vae]
    z = latents[0].float().cpu().flatten(1).T  # [h·w, C]
    rgb = (z @ matrix + offset).clamp(0, 1).T.reshape(3, *latents.shape[-2:])
    return Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
