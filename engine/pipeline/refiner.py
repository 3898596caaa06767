"""The SDXL refiner as A1111 (1.6+) runs it: the base model samples the first part of the steps,
then the same sampler continues on the refiner model from that point of the same σ schedule.

The switch happens inside the guider (`SwitchedGuider`), not by running a second sampler, so a
multistep or SDE sampler keeps its history and Brownian path across it. The refiner sees its own
encoding of the prompts (its OpenCLIP-G only, with the aesthetic-score ids) and, like A1111, the
picture is decoded with the refiner's VAE. The first `round(switch_at × steps)` steps run on the
base, which for evenly spaced timesteps is the split diffusers' `denoising_end`/`denoising_start`
make; `switch_at` 1 never switches, and is then exactly the base alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.conditioning.schedule import Conditioning
from engine.models.manager import release_memory
from engine.models.types import LoadedModel
from engine.sampling.denoiser import step_of


class Placement:
    """Which of the two UNets is on the device, where both do not fit at once: the model manager
    then leaves the refiner in RAM, and the base UNet and the refiner's UNet and VAE change places
    at the switch and back when the base samples again (the next batch), as A1111 swaps them."""

    def __init__(self, base: LoadedModel, refiner: LoadedModel):
        self.base, self.refiner = base, refiner
        self.needed = refiner.device != base.device  # the manager left it in RAM
        self.refiner_in = not self.needed

    def refiner_on_device(self) -> bool:
        """Put the refiner on the device; True when that moved anything (a swap)."""
        if self.refiner_in:
            return False
        _move(self.base.unet, torch.device("cpu"))
        release_memory(self.base.device)
        for module in (self.refiner.unet, self.refiner.vae):
            _move(module, self.base.device)
        self.refiner_in = True
        return True

    def base_on_device(self) -> None:
        """Put the base back (the next batch, and the end of the job: the models are left as the
        manager holds them)."""
        if not self.needed or not self.refiner_in:
            return
        for module in (self.refiner.unet, self.refiner.vae):
            _move(module, torch.device("cpu"))
        release_memory(self.base.device)
        _move(self.base.unet, self.base.device)
        self.refiner_in = False


def _move(module, device: torch.device) -> None:
    torch.nn.Module.to(module, device=device)  # (diffusers' .to() logs on every call)


@dataclass(frozen=True)
class Refiner:
    """The job's refiner: its loaded model, the prompts encoded for it, where it takes over, and
    where its weights are (`placement`)."""

    model: LoadedModel
    conditioning: Conditioning
    switch_at: float
    placement: Placement

    def last_model(self, base: LoadedModel) -> LoadedModel:
        """The model that ends a batch (its hires pass, its decode): the refiner once it took
        over, else the base (interrupted before the switch)."""
        return self.model if self.placement.refiner_in else base

    def infotext(self) -> dict[str, object]:
        return {
            "Refiner": f"{self.model.info.title} [{self.model.short_hash}]",
            "Refiner switch at": self.switch_at,
        }


def check_pair(base: LoadedModel, refiner: LoadedModel) -> None:
    """A refiner must work in the base's latent space (SDXL with SDXL, SD 1.x/2.x with either)."""
    if base.spec.latents != refiner.spec.latents:
        raise ValueError(
            f"the refiner {refiner.info.title} ({refiner.spec.label}) does not share the latent space "
            f"of {base.info.title} ({base.spec.label})"
        )


def switch_step(switch_at: float, steps: int) -> int:
    """How many of `steps` sampler steps run on the base model."""
    return max(0, min(steps, round(switch_at * steps)))


class SwitchedGuider:
    """The base guider until step `at_step` of `sigmas`, the refiner's from there on. At the first
    refiner evaluation the refiner is put on the device (`placement`), and `on_switch` is told how
    long that evaluation took, swap included, and whether the models were swapped (what the user
    waits at the switch)."""

    def __init__(
        self,
        first: Callable,
        second: Callable,
        sigmas: torch.Tensor,
        at_step: int,
        placement: Placement,
        on_switch: Callable[[float, bool], None] | None = None,
    ):
        self.first, self.second, self.at_step = first, second, at_step
        self.sigmas = sigmas.detach().float().cpu()
        self.placement = placement
        self.on_switch = on_switch
        self.switched = False

    def _pick(self, sigma: torch.Tensor) -> Callable:
        return self.second if step_of(self.sigmas, sigma) >= self.at_step else self.first

    def _timed(self, guider: Callable, call: Callable[[], object]):
        if guider is not self.second:
            self.placement.base_on_device()  # a new batch starts on the base
            return call()
        if self.switched:
            return call()
        started = time.monotonic()
        swapped = self.placement.refiner_on_device()
        out = call()
        self.switched = True
        if self.on_switch is not None:
            self.on_switch(time.monotonic() - started, swapped)
        return out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        guider = self._pick(sigma)
        return self._timed(guider, lambda: guider(x, sigma))

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor, scale_multiplier: float = 1.0):
        guider = self._pick(sigma)
        return self._timed(guider, lambda: guider.with_uncond(x, sigma, scale_multiplier))
