"""Tiled inference for image-to-image networks: overlapping tiles, each output tile blended in with
a weight that ramps down towards its edges, so the seams between tiles cannot be seen and a large
picture never has to fit in memory at once."""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of `tile` px overlapping by `overlap` px start along a side of `length` px;
    the last tile ends exactly at the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def edge_ramp(size: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1 in the middle, rising linearly over `overlap` at edges shared with another tile."""
    weight = torch.ones(size)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 1) / (overlap + 1)
        if not at_start:
            weight[:overlap] = ramp
        if not at_end:
            weight[-overlap:] = ramp.flip(0)
    return weight


@torch.no_grad()
def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int, overlap: int
) -> torch.Tensor:
    """fn over `image` (1, C, H, W) in tiles of `tile` px overlapping by `overlap` px; fn must map
    (1, C, h, w) to (1, C', h·scale, w·scale). tile ≤ 0 runs the whole picture at once."""
    _, _, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return fn(image)
    overlap = max(0, min(overlap, tile // 2))
    out = None
    total = torch.zeros(1, 1, height * scale, width * scale, device=image.device)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    for y in ys:
        for x in xs:
            h, w = min(tile, height - y), min(tile, width - x)
            piece = fn(image[:, :, y : y + h, x : x + w]).float()
            if out is None:
                out = torch.zeros(1, piece.shape[1], height * scale, width * scale, device=image.device)
            wy = edge_ramp(h * scale, overlap * scale, y == ys[0], y == ys[-1]).to(image.device)
            wx = edge_ramp(w * scale, overlap * scale, x == xs[0], x == xs[-1]).to(image.device)
            weight = (wy[:, None] * wx[None, :])[None, None]
            region = (
                slice(None),
                slice(None),
                slice(y * scale, (y + h) * scale),
                slice(x * scale, (x + w) * scale),
            )
            out[region] += piece * weight
            total[region] += weight
    return out / total
