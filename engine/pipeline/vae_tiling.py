"""VAE decode and encode in strips, equal to the whole-picture pass: for pictures that do not fit.

Why our own: diffusers' `tiled_decode` (and A1111's tiling) decodes each tile as a picture of its
own, so every GroupNorm normalises with that tile's statistics and the mid-block attention sees
only the tile; overlaps are then cross-faded. The tiles come out in different tones and the fade
shows (on the built-in model's VAE, 17/255 mean difference from the untiled picture at 128 px
tiles). Here the network runs layer by layer over the whole picture instead:

- the low-resolution part (the mid block with its attention, the latent-side convs) runs whole: it
  is small;
- every high-resolution layer runs strip by strip (horizontal bands with a row of context above
  and below for each 3×3 conv), and each GroupNorm uses the statistics of its *whole* input,
  computed from the stored activation before the strips run.

So the result equals the untiled pass up to float rounding, with no seams by construction. The
whole-picture activations between layers wait on the CPU when the VAE is on a GPU: the GPU holds
the weights and one strip's work, which is what lets a small card decode a large picture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

STRIP_PIXELS = 256 * 256  # one strip's area at any layer: bounds the GPU's share of the work


def storage_device(compute: torch.device) -> torch.device:
    """Where the whole-picture activations wait: RAM when the VAE is on an accelerator."""
    return torch.device("cpu") if compute.type != "cpu" else compute


def _strip_rows(width: int, multiple: int = 2) -> int:
    rows = max(multiple, STRIP_PIXELS // max(width, 1))
    return rows - rows % multiple


def _by_strips(
    fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    compute: torch.device,
    *,
    above: int = 1,
    below: int = 1,
    up: int = 1,
    down: int = 1,
) -> torch.Tensor:
    """`fn(*inputs)` computed over horizontal strips of the inputs (all of one height), each given
    `above`/`below` rows of context and cropped to its own rows of the output. Exact whenever fn's
    receptive field lies within that context; `up`/`down`: fn's output rows per input row."""
    height, width = inputs[0].shape[-2:]
    rows = _strip_rows(width * up // down, multiple=2 * down)
    out: torch.Tensor | None = None
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        start, stop = max(0, top - above), min(height, bottom + below)
        piece = fn(*(t[..., start:stop, :].to(compute) for t in inputs))
        first, last = (top - start) * up // down, (bottom - start) * up // down
        if out is None:
            shape = (*piece.shape[:2], height * up // down, piece.shape[-1])
            out = torch.empty(shape, dtype=piece.dtype, device=inputs[0].device)
        out[..., top * up // down : bottom * up // down, :] = piece[..., first:last, :]
    assert out is not None
    return out


def _group_stats(norm: torch.nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-group mean and variance of a whole stored activation, a group at a time (a
    float32 copy of one group is the most it holds at once)."""
    size = x.shape[1] // norm.num_groups
    means, variances = [], []
    for group in range(norm.num_groups):
        part = x[:, group * size : (group + 1) * size].float().flatten(1)
        variance, mean = torch.var_mean(part, dim=1, unbiased=False)
        means.append(mean)
        variances.append(variance)
    return torch.stack(means, 1), torch.stack(variances, 1)


def _normalize(norm: torch.nn.GroupNorm, x: torch.Tensor, stats: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """GroupNorm of a strip with the whole picture's statistics."""
    mean, variance = (s.to(x.device) for s in stats)
    groups = x.float().unflatten(1, (norm.num_groups, -1))
    scaled = (groups - mean[:, :, None, None, None]) * torch.rsqrt(variance + norm.eps)[
        :, :, None, None, None
    ]
    out = scaled.flatten(1, 2).to(x.dtype)
    if norm.affine:
        out = out * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
    return out


def _resnet(block: Any, x: torch.Tensor, compute: torch.device) -> torch.Tensor:
    """diffusers' ResnetBlock2D without a time embedding (the VAE's), in two sweeps: each of its
    GroupNorms needs the whole input of that norm before any strip can be normalised."""
    stats = _group_stats(block.norm1, x)

    def first(t: torch.Tensor) -> torch.Tensor:
        return block.conv1(block.nonlinearity(_normalize(block.norm1, t, stats)))

    hidden = _by_strips(first, (x,), compute)
    stats2 = _group_stats(block.norm2, hidden)

    def second(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = block.conv2(block.dropout(block.nonlinearity(_normalize(block.norm2, h, stats2))))
        shortcut = block.conv_shortcut(t) if block.conv_shortcut is not None else t
        return (shortcut + h) / block.output_scale_factor

    return _by_strips(second, (hidden, x), compute)


def _norm_act_conv(norm: Any, act: Any, conv: Any, x: torch.Tensor, compute: torch.device) -> torch.Tensor:
    stats = _group_stats(norm, x)
    return _by_strips(lambda t: conv(act(_normalize(norm, t, stats))), (x,), compute)


def _check(vae: Any) -> None:
    blocks = [*vae.decoder.up_blocks, *vae.encoder.down_blocks]
    resnets = [r for b in blocks for r in b.resnets]
    if any(r.time_emb_proj is not None or r.upsample or r.downsample for r in resnets):
        raise ValueError("this VAE's blocks are not the plain kind strip decoding supports")


@torch.no_grad()
def decode_in_strips(vae: Any, z: torch.Tensor, compute: torch.device) -> torch.Tensor:
    """`vae.decode(z).sample` (raw latents, after the scaling factor is undone), layer by layer on
    `compute` (named, not read off the weights: a memory plan may keep them in RAM until used)."""
    _check(vae)
    decoder = vae.decoder
    h = z.to(compute)
    if vae.post_quant_conv is not None:
        h = vae.post_quant_conv(h)
    h = decoder.mid_block(decoder.conv_in(h), None)
    h = h.to(storage_device(compute))
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            h = _resnet(resnet, h, compute)
        for upsampler in block.upsamplers or ():
            h = _by_strips(upsampler, (h,), compute, up=2)
    return _norm_act_conv(decoder.conv_norm_out, decoder.conv_act, decoder.conv_out, h, compute)


def _downsample(downsampler: Any, x: torch.Tensor, compute: torch.device) -> torch.Tensor:
    """Stride-2 3×3: output row i reads input rows 2i..2i+2, so a strip needs one row below only
    (SD's VAE pads the bottom edge with a zero row itself: the module keeps doing that)."""
    return _by_strips(downsampler, (x,), compute, above=0, below=1, down=2)


@torch.no_grad()
def encode_in_strips(vae: Any, x: torch.Tensor, compute: torch.device) -> torch.Tensor:
    """The moments `vae.encode(x)` builds its posterior from ([N, 2·latent, h, w]), layer by layer."""
    _check(vae)
    encoder = vae.encoder
    h = _by_strips(encoder.conv_in, (x.to(storage_device(compute)),), compute)
    for block in encoder.down_blocks:
        for resnet in block.resnets:
            h = _resnet(resnet, h, compute)
        for downsampler in block.downsamplers or ():
            h = _downsample(downsampler, h, compute)
    h = encoder.mid_block(h.to(compute))
    h = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(h)))
    return vae.quant_conv(h) if vae.quant_conv is not None else h
