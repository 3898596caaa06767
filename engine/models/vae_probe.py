"""Does a chosen VAE decode this checkpoint's latents? A test by function, not by keys.

An SD 1.x VAE and an SDXL VAE have the same architecture, key names and shapes, so no header check
tells them apart; what differs is the latent space each was trained into. An SD 1.x decoder reads
SDXL latents as a picture with the wrong colours and blotches (A1111 and Forge let it happen and
the user sees ruined pictures). So when a checkpoint loads, its own VAE encodes a fixed probe
picture; a VAE chosen later must decode those latents back about as faithfully as the own decoder
does. Fine-tunes of one VAE (SD 1.x's ft-MSE / ft-EMA, SDXL's fp16 fix) share a latent space and
score within a dB or two of each other; a decoder of another space misses the colours entirely.

Thresholds: rejected only when the chosen decoder's error is more than `MARGIN_DB` worse than the
own one's *and* below `USABLE_DB`, a fidelity no usable decoder misses on flat shapes. An own VAE
that cannot reconstruct the probe itself (`EVIDENCE_DB`: random test weights, a broken baked VAE)
gives no evidence, and any VAE is accepted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

PROBE_SIZE = 64  # px: 8×8 latents on an ×8 VAE, a fraction of a second even for SDXL's VAE on a CPU
EVIDENCE_DB = 15.0
MARGIN_DB = 6.0  # 4× the own decoder's mean squared error
USABLE_DB = 25.0


def probe_picture(size: int = PROBE_SIZE) -> torch.Tensor:
    """[1, 3, size, size] in [-1, 1]: a red disc, a blue square and a green bar on a warm ground.
    Saturated primaries, so a decoder that reads the latent channels differently cannot hide it."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    picture = torch.tensor([0.95, 0.9, 0.8])[:, None, None].repeat(1, size, size)
    shapes = (
        (((xs - 0.35) ** 2 + (ys - 0.4) ** 2).sqrt() < 0.2, (0.9, 0.15, 0.1)),
        ((xs > 0.6) & (xs < 0.85) & (ys > 0.55) & (ys < 0.85), (0.1, 0.3, 0.85)),
        ((xs > 0.1) & (xs < 0.9) & (ys > 0.82) & (ys < 0.92), (0.2, 0.7, 0.25)),
    )
    for inside, colour in shapes:
        picture[:, inside] = torch.tensor(colour)[:, None]
    return picture[None] * 2 - 1


def _psnr(decoded: torch.Tensor, picture: torch.Tensor) -> float:
    """dB on the 0..1 scale; -inf for NaN/inf output (an fp16 overflow counts as a miss)."""
    if not torch.isfinite(decoded).all():
        return -math.inf
    mse = ((decoded.clamp(-1, 1) - picture) / 2).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _probe_size(vae: Any) -> int:
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return max(PROBE_SIZE, scale) // scale * scale


@torch.no_grad()
def _decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    param = next(vae.parameters())
    return vae.decode(latents.to(param.device, param.dtype)).sample.float().cpu()


@dataclass(frozen=True)
class LatentProbe:
    """The probe picture as the checkpoint's own VAE encodes it (raw latents, before the family's
    scaling factor, which is the model's and the same for any VAE put on it)."""

    latents: torch.Tensor  # fp32, CPU
    own_psnr: float  # the own decoder on them

    @classmethod
    @torch.no_grad()
    def of(cls, vae: Any) -> LatentProbe | None:
        """None where the own VAE does not reconstruct the probe (no evidence to judge others by)."""
        picture = probe_picture(_probe_size(vae))
        param = next(vae.parameters())
        latents = vae.encode(picture.to(param.device, param.dtype)).latent_dist.mode().float().cpu()
        own = _psnr(_decode(vae, latents), picture)
        if not own >= EVIDENCE_DB:
            log.info("the checkpoint's own VAE reconstructs the probe at %.1f dB: VAEs go unchecked", own)
            return None
        return cls(latents, own)

    def psnr_through(self, vae: Any) -> float:
        """How faithfully `vae` decodes the own encoder's latents of the probe picture."""
        size = self.latents.shape[-1] * 2 ** (len(vae.config.block_out_channels) - 1)
        return _psnr(_decode(vae, self.latents), probe_picture(size))

    def check(self, vae: Any, vae_name: str, checkpoint: str) -> None:
        """Raise ValueError when `vae` reads the latents of another space (an SD 1.x VAE on SDXL)."""
        theirs = self.psnr_through(vae)
        log.info("VAE %s on %s: probe %.1f dB (own VAE %.1f dB)", vae_name, checkpoint, theirs, self.own_psnr)
        if theirs < self.own_psnr - MARGIN_DB and theirs < USABLE_DB:
            raise ValueError(
                f"VAE {vae_name} does not decode {checkpoint}'s latents: a test picture comes back at "
                f"{theirs:.1f} dB through it and {self.own_psnr:.1f} dB through the checkpoint's own "
                "VAE. It was made for another model family (an SD 1.x VAE on SDXL, or the reverse): "
                "choose Automatic or a VAE of this family (Settings: sd_vae, or turn off "
                "sd_vae_check_latents to use it anyway)."
            )
