"""Stage 2: UNet + CLIP text encoder, trained together on latents of the frozen VAE.

SD 1.x's recipe at toy scale: ε-prediction on the scaled-linear schedule (β 0.00085 → 0.012, 1000
steps), captions dropped 10 % of the time to the empty prompt so classifier-free guidance works,
and Min-SNR-γ loss weighting (Hang et al. 2023), which converges several times faster than the
plain ε loss by not letting the near-noiseless timesteps dominate. Latents of a fixed scene set are
encoded once (the encoder costs as much as a UNet step). Progress is measured by sampling with the
app's own sampler code and grading the pictures with the adherence scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.common import (
    EMA,
    Deadline,
    LogWriter,
    autocast,
    check_resume_config,
    config_dict,
    cosine_lr,
    load_state,
    save_grid,
    save_state,
    step_generator,
    step_rng,
    to_tensor,
)
from training.vae_stage import latent_scale
from world import random_scene, render
from world.adherence import random_captions


@dataclass(frozen=True)
class DiffusionConfig:
    seed: int = 1
    n_scenes: int = 32768
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3  # the probe's 5e-4 learned shape and position too slowly on a CPU budget
    warmup: int = 200
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    # Offset noise (a per-image, per-channel constant added to ε): without it SD's schedule leaves
    # enough signal at t = 999 for the model to read the flat background colour off the noise's
    # mean instead of the prompt, and pure-noise sampling then paints random backgrounds. The
    # shipped run switched it on at step 1300, after the step-1000 evaluation showed exactly that
    # (background right 12 %); a fresh run can use 0 here.
    offset_noise: float = 0.1
    offset_noise_from: int = 1300
    # Multi-resolution ("pyramid") noise: extra noise at 1/2, 1/4, ... resolution, weighted by
    # discount^level, then rescaled to unit variance. Like offset noise for the mean, it hides the
    # coarse layout (where the shape is) at high t, so the model must take it from the prompt.
    pyramid_discount: float = 0.0  # 0 = off (the shipped run)
    # Fraction of each batch whose t is drawn from the noisiest 30 % of the schedule, where the
    # layout is decided (0 = plain uniform t, the shipped run).
    high_t_fraction: float = 0.0
    # Weight of an auxiliary loss: a training-only 3×3 conv head on the UNet's last features
    # predicts where the shape is (its coverage of each latent cell). Position is a colour × place
    # conjunction in latent space (position alone explains 0.2 % of its variance), which a UNet
    # learns very slowly; the mask is colour-free, so position alone predicts it, and in the
    # regression probe the position gap opened within 250 steps with it versus none without.
    # The head is not exported: the shipped UNet is unchanged. 0 = off (the shipped run).
    mask_loss: float = 0.0
    # Hard-example focus for fine-tunes: this share of each batch is drawn from the scenes with this
    # background colour ("" = off, the plain uniform draw). The shipped model painted 9 of 26 orange
    # backgrounds wholly red or yellow (its neighbours in colour), and with the ControlNet those
    # flips were most of its misses.
    focus_background: str = ""
    focus_share: float = 0.0
    # Input perturbation (Ning et al. 2023, "Input Perturbation Reduces Exposure Bias in Diffusion
    # Models"): the UNet sees x_t made with ε + γ·ξ but is still asked for ε, so it learns to answer
    # sensibly a little off the training distribution, where a sampler's own errors (and CFG) take
    # it. 0 = off (the shipped run); the paper uses 0.1.
    input_perturbation: float = 0.0
    ema_decay: float = 0.999
    eval_every: int = 500
    eval_prompts: int = 32
    checkpoint_every: int = 100


def scene_masks(cfg: DiffusionConfig, size: int) -> torch.Tensor:
    """[n_scenes, 1, size, size] shape coverage of the run's scenes, scaled to [-1, 1]: the same
    scenes `encode_dataset` draws (same seed), so rows line up with its latents."""
    from world.scenes import coverage

    rng = np.random.default_rng([cfg.seed, 7])
    masks = np.stack([coverage(random_scene(rng), size) for _ in range(cfg.n_scenes)])
    return torch.from_numpy(masks)[:, None] * 2 - 1


class MaskHead(torch.nn.Module):
    """Training-only: reads the features entering the UNet's conv_out (captured by a forward
    pre-hook, so the UNet itself is not modified) and predicts the shape's coverage."""

    def __init__(self, unet) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(unet.conv_out.in_channels, 1, kernel_size=3, padding=1)
        self.features: torch.Tensor | None = None
        self.handle = unet.conv_out.register_forward_pre_hook(self._capture)

    def _capture(self, _module, args) -> None:
        self.features = args[0]

    def forward(self) -> torch.Tensor:
        assert self.features is not None, "run the UNet first"
        return self.conv(self.features)


def load_trained_vae(vae, run_dir: Path) -> Any:
    state = load_state(run_dir / "vae_state.pt")
    if state is None:
        raise FileNotFoundError(f"no VAE in {run_dir}: run the vae stage first")
    vae.load_state_dict(state["ema"])
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_dataset(vae, cfg: DiffusionConfig, run_dir: Path, device: torch.device) -> dict[str, Any]:
    """Latent means (unscaled, fp16) and captions of `n_scenes` scenes, cached in the run dir."""
    path = run_dir / "latents.pt"
    if (cached := load_state(path)) is not None and cached["n"] == cfg.n_scenes:
        return cached
    rng = np.random.default_rng([cfg.seed, 7])
    scenes = [random_scene(rng) for _ in range(cfg.n_scenes)]
    latents = []
    for i in tqdm(range(0, len(scenes), 64), desc="encode latents", dynamic_ncols=True):
        images = to_tensor([render(s) for s in scenes[i : i + 64]]).to(device)
        with autocast(device):
            latents.append(vae.encode(images).latent_dist.mean.float().cpu().half())
    data = {
        "n": cfg.n_scenes,
        "latents": torch.cat(latents),
        "captions": [s.caption for s in scenes],
        "scale": latent_scale(vae, device, cfg.seed),
    }
    save_state(path, data)
    return data


def focus_indices(captions: list[str], background: str) -> np.ndarray | None:
    """Indices of the captions on `background` (None when no focus is asked for)."""
    if not background:
        return None
    from world.scenes import parse_caption

    found = [i for i, caption in enumerate(captions) if parse_caption(caption).background == background]
    if not found:
        raise ValueError(f"focus_background {background!r}: no training scene has that background")
    return np.array(found)


def draw_indices(
    rng: np.random.Generator, n: int, batch: int, focus: np.ndarray | None, share: float
) -> np.ndarray:
    """A batch of scene indices: uniform, except that each is replaced, with probability `share`, by
    one drawn from `focus` (without a focus the draws are exactly the unfocused run's)."""
    index = rng.integers(n, size=batch)
    if focus is not None:
        chosen = rng.random(batch) < share
        index = np.where(chosen, focus[rng.integers(len(focus), size=batch)], index)
    return index


def token_table(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids per caption [N, 77], ids of the empty prompt [77]) exactly as the app tokenizes."""
    from engine.conditioning.tokens import tokenize_chunks

    cache: dict[str, list[int]] = {}
    rows = [cache.setdefault(c, tokenize_chunks(tokenizer, c)[0]) for c in captions]
    return torch.tensor(rows), torch.tensor(tokenize_chunks(tokenizer, "")[0])


def pyramid_noise(noise: torch.Tensor, discount: float, generator: torch.Generator) -> torch.Tensor:
    """`noise` plus upsampled noise at every coarser power-of-two scale, rescaled to unit std."""
    b, c, h, w = noise.shape
    level = 1
    while min(h, w) >> level >= 1:
        coarse = torch.randn((b, c, h >> level, w >> level), generator=generator)
        noise = noise + discount**level * F.interpolate(coarse, size=(h, w), mode="bilinear")
        level += 1
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t of the schedule the model ships with, computed exactly as the app's loader computes it."""
    from engine.models.builtin import SCHEDULER
    from engine.models.configs import alphas_cumprod_from_config

    return alphas_cumprod_from_config(SCHEDULER)


def sample_and_score(unet, vae, text_encoder, tokenizer, captions: list[str], device, grid_path=None):
    """Adherence of the current weights, measured exactly as bench/adherence.py measures it."""
    from engine.models.types import CheckpointInfo, LoadedModel
    from world.adherence import generate_and_score

    info = CheckpointInfo("training-eval", Path("training-eval"), "safetensors", 0, 0.0)
    model = LoadedModel(
        info, "0000000000", "sd1", "epsilon", unet, vae, text_encoder, tokenizer,
        alphas_cumprod(), device, torch.float32, torch.float32,
    )  # fmt: skip
    report = generate_and_score(model, captions)
    if grid_path is not None:
        save_grid(report.images[:16], grid_path, columns=8)
    return report.fractions()


def init_from_run(unet, text_encoder, source: Path) -> None:
    """Start from another run's EMA weights (fine-tuning); a plain UNet's conv_in is widened with
    zero coordinate columns, so the starting model computes exactly what the source did."""
    from engine.models.coord_unet import grow_conv_in

    state = load_state(source / "diffusion_state.pt")
    if state is None:
        raise FileNotFoundError(f"--init-from {source}: no diffusion_state.pt there")
    unet.load_state_dict(grow_conv_in(state["ema_unet"], unet))
    text_encoder.load_state_dict(state["ema_text_encoder"])


def train_diffusion(
    unet,
    vae,
    text_encoder,
    run_dir: Path,
    cfg: DiffusionConfig,
    device,
    deadline: Deadline,
    init_from: Path | None = None,
    stop_at: int | None = None,
) -> bool:
    """Train (or resume) UNet + text encoder in `run_dir`; True when all steps are done.
    A fresh run starts from `init_from`'s weights when given (ignored once the run has a state).
    `stop_at`: checkpoint and stop at this step, part-way through the schedule (the shipped model's
    runs ended so, and tools/regenerate_builtin.sh replays them)."""
    from engine.models.tokenizer import load_clip_tokenizer

    vae = load_trained_vae(vae, run_dir).to(device)
    data = encode_dataset(vae, cfg, run_dir, device)
    vae.register_to_config(scaling_factor=data["scale"])
    tokenizer = load_clip_tokenizer()
    ids, empty_ids = token_table(tokenizer, data["captions"])
    latents = data["latents"]
    ab = alphas_cumprod().to(device)

    state = load_state(state_path := run_dir / "diffusion_state.pt")
    if state is None and init_from is not None:
        init_from_run(unet, text_encoder, init_from)
    unet.to(device).train()
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema_unet, ema_te = EMA(unet, cfg.ema_decay), EMA(text_encoder, cfg.ema_decay)
    head = masks = None
    if cfg.mask_loss:  # after the EMA copies: they must not carry the head's hook
        head = MaskHead(unet).to(device)
        masks = scene_masks(cfg, latents.shape[-1])
        params += list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    log = LogWriter(run_dir / "diffusion_log.jsonl")
    step = 0
    if state is not None:
        check_resume_config(state, cfg, state_path)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        if head is not None:
            head.load_state_dict(state["mask_head"])
        ema_unet.shadow.load_state_dict(state["ema_unet"])
        ema_te.shadow.load_state_dict(state["ema_text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    ema_unet.shadow.to(device)
    ema_te.shadow.to(device)

    def checkpoint() -> None:
        save_state(
            state_path,
            {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.shadow.state_dict(),
                "ema_text_encoder": ema_te.shadow.state_dict(),
                "optimizer": optimizer.state_dict(),
                **({"mask_head": head.state_dict()} if head is not None else {}),
                "step": step,
                "scale": data["scale"],
                "config": config_dict(cfg),
            },
        )

    focus = focus_indices(data["captions"], cfg.focus_background)
    eval_set = random_captions(cfg.eval_prompts, cfg.seed)
    bar = tqdm(total=cfg.steps, initial=step, desc="unet+clip", dynamic_ncols=True)
    while step < cfg.steps:
        if deadline.passed() or (stop_at is not None and step >= stop_at):
            checkpoint()
            bar.close()
            return False
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        rng = step_rng(cfg.seed, "diffusion", step)
        index = torch.from_numpy(draw_indices(rng, len(latents), cfg.batch, focus, cfg.focus_share))
        t = rng.integers(0, 1000, size=cfg.batch)
        high = rng.random(cfg.batch) < cfg.high_t_fraction
        t = torch.from_numpy(np.where(high, rng.integers(700, 1000, size=cfg.batch), t)).to(device)
        drop = torch.from_numpy(rng.random(cfg.batch) < cfg.caption_dropout)
        tokens = torch.where(drop[:, None], empty_ids[None], ids[index]).to(device)
        x0 = latents[index].float().to(device) * data["scale"]
        generator = step_generator(cfg.seed, "diffusion", step)
        noise = torch.randn(x0.shape, generator=generator)
        if step >= cfg.offset_noise_from:
            noise = noise + cfg.offset_noise * torch.randn((*x0.shape[:2], 1, 1), generator=generator)
        if cfg.pyramid_discount:
            noise = pyramid_noise(noise, cfg.pyramid_discount, generator)
        seen = noise  # what x_t is made with; the target stays `noise`
        if cfg.input_perturbation:  # drawn last, so runs without it keep their noise
            seen = noise + cfg.input_perturbation * torch.randn(x0.shape, generator=generator)
        noise, seen = noise.to(device), seen.to(device)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * seen
        with autocast(device):
            context = text_encoder(tokens)[0]
            pred = unet(xt, t, encoder_hidden_states=context).sample.float()
            mask_pred = head().float() if head is not None else None
        snr = ab[t] / (1 - ab[t])
        weight = snr.clamp(max=cfg.min_snr_gamma) / snr
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        if mask_pred is not None:
            loss = loss + cfg.mask_loss * (mask_pred - masks[index].to(device)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_unet.update(unet, step)
        ema_te.update(text_encoder, step)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 25 == 0:
            log.write(step=step, loss=round(loss.item(), 5))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = sample_and_score(
                ema_unet.shadow, vae, ema_te.shadow, tokenizer, eval_set, device,
                run_dir / "samples" / f"diffusion_{step:06d}.png",
            )  # fmt: skip
            log.write(step=step, eval=metrics)
            tqdm.write(f"diffusion step {step}: {metrics}")
    bar.close()
    return True
