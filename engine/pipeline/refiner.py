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
from engine.models.memory_plan import is_on
from engine.models.types import LoadedModel
from engine.sampling.denoiser import step_of


@dataclass
class Refiner:
    """The job's refiner: its loaded model, the prompts encoded for it, and where it takes over.
    Where its weights are is the job's memory plan's business (engine.models.memory_plan plans
    both models: under medvram the refiner's parts take their turn on the device)."""

    model: LoadedModel
    conditioning: Conditioning
    switch_at: float
    took_over: bool = False  # in the batch now sampling (set by SwitchedGuider)

    def last_model(self, base: LoadedModel) -> LoadedModel:
        """The model that ends a batch (its hires pass, its decode): the refiner once it took
        over, else the base (interrupted before the switch)."""
        return self.model if self.took_over else base

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
    """The base guider until step `at_step` of `sigmas`, the refiner's from there on.
    `on_switch` is told how long the first refiner evaluation took and whether the refiner's
    UNet had to come to the device for it (what the user waits at the switch)."""

    def __init__(
        self,
        first: Callable,
        second: Callable,
        sigmas: torch.Tensor,
        at_step: int,
        refiner: Refiner,
        on_switch: Callable[[float, bool], None] | None = None,
    ):
        self.first, self.second, self.at_step = first, second, at_step
        self.sigmas = sigmas.detach().float().cpu()
        self.refiner = refiner
        self.on_switch = on_switch
        self.switched = False

    def _pick(self, sigma: torch.Tensor) -> Callable:
        return self.second if step_of(self.sigmas, sigma) >= self.at_step else self.first

    def _timed(self, guider: Callable, call: Callable[[], object]):
        if guider is not self.second:
            self.refiner.took_over = False  # a new batch starts on the base
            return call()
        self.refiner.took_over = True
        if self.switched:
            return call()
        started = time.monotonic()
        model = self.refiner.model
        moved = not is_on(model.unet, model.device)  # in RAM under the job's plan: it comes in now
        out = call()
        self.switched = True
        if self.on_switch is not None:
            self.on_switch(time.monotonic() - started, moved)
        return out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        guider = self._pick(sigma)
        return self._timed(guider, lambda: guider(x, sigma))

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor, scale_multiplier: float = 1.0):
        guider = self._pick(sigma)
        return self._timed(guider, lambda: guider.with_uncond(x, sigma, scale_multiplier))
