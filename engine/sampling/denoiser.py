"""The model → σ-space denoiser adapter and classifier-free guidance (docs/design.md, examples 2 and 3).

`SigmaDenoiser` turns a UNet trained on discrete timesteps with ε- or v-prediction into
D(x, σ) → x̂₀ over the variance-exploding variable x = x_VP / sqrt(ᾱ) (k-diffusion's convention).
`CFGGuider` runs the conditional and unconditional passes in one batch and combines them; callers
can hook before and after the combination without touching the sampling loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.conditioning.schedule import Conditioning
from engine.conditioning.text_cond import TextCond
from engine.sampling.schedules import ModelSigmas

PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")

# A UNet call: (scaled x, timestep, text embeddings) -> model output (ε or v).
UNetFn = Callable[[torch.Tensor, torch.Tensor, TextCond], torch.Tensor]


class SigmaDenoiser:
    """D(x, σ, cond) for an ε- or v-prediction model with a discrete σ table, or a rectified-flow
    model ("flow": SD 3, Flux), whose network takes x as it is and predicts the velocity
    v = ε − x₀, so x̂₀ = x − σ·v."""

    def __init__(
        self,
        unet: UNetFn,
        model_sigmas: ModelSigmas,
        prediction_type: str,
        *,
        wants_uncond_count: bool = False,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction type {prediction_type!r}")
        self.unet = unet
        self.model_sigmas = model_sigmas
        self.prediction_type = prediction_type
        # ControlNet's "ControlNet is more important" treats the unconditional rows of the CFG batch
        # differently: such a UNet function takes `uncond_count=` (the batch's leading uncond rows)
        # and `t_value=` (the timestep as a number: ControlNet's step range, read without a sync).
        self.wants_uncond_count = wants_uncond_count
        # σ's → (UNet timesteps on the device, the first as a number)
        self._timesteps: dict[tuple[float, ...], tuple[torch.Tensor, float]] = {}

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: TextCond, uncond_count: int = 0
    ) -> torch.Tensor:
        # σ's stay on the CPU (reading a GPU value back would stall the GPU at every step); the
        # UNet's timesteps are made on the device once per σ and reused (CFG rows, later steps).
        sigma = sigma.to(torch.float32).reshape(-1).cpu()
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        key = tuple(sigma.tolist())
        cached = self._timesteps.get(key)
        if cached is None:
            t_cpu = self.model_sigmas.model_timestep(sigma)
            cached = self._timesteps[key] = (t_cpu.to(x.device), float(t_cpu[0]))
        t, t_value = cached
        # One σ for the batch (the usual case): a CPU scalar, which a device tensor takes as a
        # plain number; distinct σ's per row: a column on the device.
        s = sigma[0] if len(set(key)) == 1 else sigma.to(x.device).view(-1, 1, 1, 1)
        extra = {"uncond_count": uncond_count, "t_value": t_value} if self.wants_uncond_count else {}
        if self.prediction_type == "flow":
            return x - self.unet(x, t, cond, **extra).to(x.dtype) * s
        c_in = 1 / (s**2 + 1).sqrt()
        out = self.unet(x * c_in, t, cond, **extra).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - out * s
        # v-prediction (Salimans & Ho 2022), σ_data = 1: x̂₀ = c_skip·x + c_out·v.
        return x / (s**2 + 1) - out * s / (s**2 + 1).sqrt()


@dataclass
class GuidanceHooks:
    """Named hook points of guidance (ComfyUI's pre/post-CFG functions, diffusers' guiders).

    pre_model: f(x, σ) -> x, before the model is evaluated
    pre_cfg: f(uncond_x0, cond_x0, σ) -> (uncond_x0, cond_x0)
    after_cfg: f(x, σ, guided_x0, uncond_x0 | None, cond_x0) -> guided_x0 (extensions: CFG rescale)
    post_cfg: f(guided_x0, σ) -> guided_x0 (inpainting's blend: always the last word)
    """

    pre_model: list[Callable] = field(default_factory=list)
    pre_cfg: list[Callable] = field(default_factory=list)
    after_cfg: list[Callable] = field(default_factory=list)
    post_cfg: list[Callable] = field(default_factory=list)


def step_of(sigmas: torch.Tensor, sigma: torch.Tensor) -> int:
    """The step of a run whose σ schedule is `sigmas` (CPU floats) that evaluates at `sigma`: the
    last step whose σ is ≥ it, so a sampler's second evaluation inside a step (Heun, DPM2) still
    counts as that step."""
    s = float(sigma.reshape(-1)[0])
    above = int((sigmas[:-1] >= s * (1 - 1e-5)).sum())
    return max(0, min(above - 1, len(sigmas) - 2))


class CFGGuider:
    """Classifier-free guidance with composable sub-prompts (AND) and prompt schedules.

    x̂₀ = uncond + scale · Σᵢ wᵢ (condᵢ − uncond), all passes in one batched model call, with the
    embeddings of the current step (`Conditioning.at`). The step is read off σ — the last step
    of `sigmas` whose σ is ≥ the σ asked for — so a sampler that evaluates the model twice per
    step (Heun, DPM2) sees the prompt of the noise level it evaluates, whatever its order.
    """

    def __init__(
        self,
        denoiser: SigmaDenoiser,
        conditioning: Conditioning,
        scale: float,
        sigmas: torch.Tensor | None = None,
        hooks: GuidanceHooks | None = None,
        *,
        skip_early_cond: float = 0.0,
        s_min_uncond: float = 0.0,
        s_min_uncond_all: bool = False,
    ):
        if (
            conditioning.changes or skip_early_cond or (s_min_uncond and not s_min_uncond_all)
        ) and sigmas is None:
            raise ValueError("a scheduled prompt or a step-based guidance skip needs the sampler's sigmas")
        self.denoiser, self.conditioning, self.scale = denoiser, conditioning, scale
        self.sigmas = None if sigmas is None else sigmas.detach().float().cpu()
        self.hooks = hooks or GuidanceHooks()
        self.skip_early_cond = skip_early_cond  # see skips_uncond
        self.s_min_uncond = s_min_uncond
        self.s_min_uncond_all = s_min_uncond_all

    @classmethod
    def plain(cls, denoiser: SigmaDenoiser, cond: torch.Tensor, uncond: torch.Tensor, scale: float, **kw):
        """One prompt, one negative prompt, nothing scheduled."""
        return cls(denoiser, Conditioning.constant(cond, uncond), scale, **kw)

    def step_at(self, sigma: torch.Tensor) -> int:
        return 0 if self.sigmas is None else step_of(self.sigmas, sigma)

    def _batch(self, embeddings: list[TextCond], n: int) -> TextCond:
        return TextCond.cat([TextCond.of(e).expand(n) for e in embeddings])

    def skips_uncond(self, sigma: torch.Tensor) -> bool:
        """A1111's two guidance skips. "Skip Early CFG": the first `skip_early_cond` fraction of the
        steps. NGMS: steps whose σ is below `s_min_uncond`, every other step (odd ones) unless
        `s_min_uncond_all`. A1111 counts model calls where we count the sampler's steps (read off σ,
        as for prompt editing), so a two-evaluation sampler (Heun, DPM2) skips both evaluations of a
        step or neither; one-evaluation samplers skip the same steps as in A1111."""
        if not (self.skip_early_cond or self.s_min_uncond):
            return False
        step = self.step_at(sigma)
        if self.skip_early_cond and step / max(1, len(self.sigmas) - 1) <= self.skip_early_cond:
            return True
        below = float(sigma.reshape(-1)[0]) < self.s_min_uncond
        return below and (self.s_min_uncond_all or step % 2 == 1)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if (self.scale == 1.0 and self.conditioning.is_single) or self.skips_uncond(sigma):
            # the uncond has no effect (CFG 1, as A1111 skips it) or is skipped: half the work
            return self._without_uncond(x, sigma)[0]
        return self.with_uncond(x, sigma)[0]

    def _without_uncond(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀ at CFG 1 from the prompt's passes alone, the first sub-prompt's x̂₀). As in A1111, the
        first sub-prompt stands in for the skipped uncond: x̂₀ = c₀ + Σᵢ wᵢ (cᵢ − c₀), which is the
        prompt's x̂₀ when there is no AND."""
        conds, weights, _ = self.conditioning.at(self.step_at(sigma))
        for hook in self.hooks.pre_model:
            x = hook(x, sigma)
        cond_x0s = self._evaluate(x, sigma, conds)
        first = cond_x0s[0]
        guided = first + sum(w * (c - first) for w, c in zip(weights[1:], cond_x0s[1:], strict=True))
        return self._after_cfg(x, sigma, guided, None, guided), first

    def with_uncond(
        self, x: torch.Tensor, sigma: torch.Tensor, scale_multiplier: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided x̂₀ at scale · scale_multiplier, unconditional x̂₀), both from one batched call.
        Samplers that step along the unconditional prediction (DDIM CFG++) call this directly.
        Pre-CFG hooks see (uncond, uncond + Σ wᵢ (condᵢ − uncond)): one combined conditional.
        Where the uncond is skipped (`skips_uncond`), the first sub-prompt's x̂₀ stands in for it."""
        if self.skips_uncond(sigma):
            return self._without_uncond(x, sigma)
        conds, weights, uncond = self.conditioning.at(self.step_at(sigma))
        for hook in self.hooks.pre_model:
            x = hook(x, sigma)
        uncond_x0, *cond_x0s = self._evaluate(x, sigma, [uncond, *conds], with_uncond=True)
        cond_x0 = uncond_x0 + sum(w * (c - uncond_x0) for w, c in zip(weights, cond_x0s, strict=True))
        for hook in self.hooks.pre_cfg:
            uncond_x0, cond_x0 = hook(uncond_x0, cond_x0, sigma)
        guided = uncond_x0 + self.scale * scale_multiplier * (cond_x0 - uncond_x0)
        return self._after_cfg(x, sigma, guided, uncond_x0, cond_x0), uncond_x0

    def _evaluate(
        self, x: torch.Tensor, sigma: torch.Tensor, embeddings: list[TextCond], with_uncond: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """x̂₀ of every image under each embedding, from one batched model call (embedding-major rows;
        with `with_uncond` the first embedding is the uncond, which a ControlNet UNet is told of)."""
        n, rows = x.shape[0], len(embeddings)
        sigma_batch = sigma.reshape(-1)
        if sigma_batch.numel() > 1:
            sigma_batch = sigma_batch.repeat(rows)
        wants_layout = with_uncond and getattr(self.denoiser, "wants_uncond_count", False)
        layout = {"uncond_count": n} if wants_layout else {}
        out = self.denoiser(torch.cat([x] * rows), sigma_batch, self._batch(embeddings, n), **layout)
        return out.chunk(rows)

    def _after_cfg(self, x, sigma, guided, uncond_x0, cond_x0) -> torch.Tensor:
        for hook in self.hooks.after_cfg:
            guided = hook(x, sigma, guided, uncond_x0, cond_x0)
        for hook in self.hooks.post_cfg:
            guided = hook(guided, sigma)
        return guided
