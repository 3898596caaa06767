"""Stage 1: the ×8 AutoencoderKL.

Most steps train on 64×64 crops placed over the shape (4× cheaper than full frames, and the flat
background needs little practice); the last steps fine-tune on full 128×128 frames so GroupNorm and
the mid-block attention see the statistics of the frames they will decode. The loss is L1 with
extra weight on edges — a shape's class lives in its outline, which plain L1 under-weights — plus
SD's tiny KL term. Progress is judged the way users will judge it: reconstructions go through the
adherence scorer, because a VAE that blurs stars into circles caps every model trained after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    to_uint8,
)
from world import ATTRIBUTES, random_scene, render, score_image
from world.scenes import FRAME

CROP = 64


@dataclass(frozen=True)
class VaeConfig:
    seed: int = 1
    steps: int = 3400
    full_frame_from: int = 3000  # steps ≥ this use whole 128-px frames
    crop_batch: int = 32
    full_batch: int = 8
    lr: float = 6e-4
    warmup: int = 100
    edge_weight: float = 4.0
    kl_weight: float = 1e-6
    ema_decay: float = 0.998
    eval_every: int = 500
    eval_scenes: int = 64
    checkpoint_every: int = 100


def _crop_around_shape(
    image: np.ndarray, centre: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    if rng.random() < 0.8:
        cx, cy = (c + rng.uniform(-CROP / 4, CROP / 4) for c in centre)
        x0, y0 = (int(np.clip(round(c - CROP / 2), 0, FRAME - CROP)) for c in (cx, cy))
    else:  # some crops anywhere: corners, edges, background only
        x0, y0 = (int(v) for v in rng.integers(0, FRAME - CROP + 1, size=2))
    return image[y0 : y0 + CROP, x0 : x0 + CROP]


def training_batch(cfg: VaeConfig, step: int) -> torch.Tensor:
    rng = step_rng(cfg.seed, "vae", step)
    full = step >= cfg.full_frame_from
    images = []
    for _ in range(cfg.full_batch if full else cfg.crop_batch):
        scene = random_scene(rng)
        image = render(scene)
        images.append(image if full else _crop_around_shape(image, scene.centre, rng))
    return to_tensor(images)


def edge_weights(target: torch.Tensor, strength: float) -> torch.Tensor:
    """1 on flat areas, up to 1+strength on a shape's outline (gradient magnitude of the target)."""
    gray = target.mean(1, keepdim=True)
    gx = F.pad(gray[..., :, 1:] - gray[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1))
    magnitude = (gx.abs() + gy.abs()).clamp(max=0.5) / 0.5
    return 1 + strength * F.max_pool2d(magnitude, 3, stride=1, padding=1)


def eval_scenes(cfg: VaeConfig) -> list:
    rng = np.random.default_rng([cfg.seed, 999])
    return [random_scene(rng) for _ in range(cfg.eval_scenes)]


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Encode to the posterior mean and decode, as img2img and the benchmark do."""
    with autocast(device):
        latents = vae.encode(images.to(device)).latent_dist.mean
        return vae.decode(latents).sample.float().cpu()


def evaluate(vae, cfg: VaeConfig, device: torch.device, grid_path: Path | None = None) -> dict[str, float]:
    scenes = eval_scenes(cfg)
    originals = [render(s) for s in scenes]
    recon = []
    for i in range(0, len(scenes), 16):
        recon += to_uint8(reconstruct(vae, to_tensor(originals[i : i + 16]), device))
    hits = {a: 0 for a in ATTRIBUTES}
    for image, scene in zip(recon, scenes, strict=True):
        for attribute, ok in score_image(image, scene.caption).items():
            hits[attribute] += int(ok)
    mse = np.mean([np.mean((a.astype(np.float32) - b) ** 2) for a, b in zip(recon, originals, strict=True)])
    result = {a: hits[a] / len(scenes) for a in ATTRIBUTES}
    result["psnr"] = float(10 * np.log10(255**2 / max(mse, 1e-6)))
    if grid_path is not None:
        pairs = [img for k in range(min(8, len(recon))) for img in (originals[k], recon[k])]
        save_grid(pairs, grid_path, columns=8)
    return result


def train_vae(vae, run_dir: Path, cfg: VaeConfig, device: torch.device, deadline: Deadline) -> bool:
    """Train (or resume) the VAE in `run_dir`; True when all steps are done."""
    state_path = run_dir / "vae_state.pt"
    log = LogWriter(run_dir / "vae_log.jsonl")
    vae.to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(vae, cfg.ema_decay)
    step = 0
    if (state := load_state(state_path)) is not None:
        check_resume_config(state, cfg, state_path)
        vae.load_state_dict(state["model"])
        ema.shadow.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    ema.shadow.to(device)

    def checkpoint() -> None:
        save_state(
            state_path,
            {
                "model": vae.state_dict(),
                "ema": ema.shadow.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "config": config_dict(cfg),
            },
        )

    bar = tqdm(total=cfg.steps, initial=step, desc="vae", dynamic_ncols=True)
    while step < cfg.steps:
        if deadline.passed():
            checkpoint()
            bar.close()
            return False
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        target = training_batch(cfg, step).to(device)
        with autocast(device):
            posterior = vae.encode(target).latent_dist
            latents = posterior.sample(generator=step_generator(cfg.seed, "vae", step))
            output = vae.decode(latents).sample.float()
        recon = ((output - target).abs() * edge_weights(target, cfg.edge_weight)).mean()
        kl = posterior.kl().mean() / target[0].numel()
        loss = recon + cfg.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        ema.update(vae, step)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{recon.item():.4f}")
        if step % 25 == 0:
            log.write(step=step, loss=round(recon.item(), 5), kl=round(kl.item(), 3))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = evaluate(ema.shadow, cfg, device, run_dir / "samples" / f"vae_{step:06d}.png")
            log.write(step=step, eval=metrics)
            tqdm.write(f"vae step {step}: {metrics}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    return True


@torch.no_grad()
def latent_scale(vae, device: torch.device, seed: int, n: int = 256) -> float:
    """1/std of posterior means over `n` scenes: the config's `scaling_factor`, so the diffusion
    model sees unit-variance latents exactly as SD 1.5's 0.18215 arranges for its VAE."""
    rng = np.random.default_rng([seed, 4242])
    images = to_tensor([render(random_scene(rng)) for _ in range(n)])
    means = []
    for i in range(0, n, 32):
        with autocast(device):
            means.append(vae.encode(images[i : i + 32].to(device)).latent_dist.mean.float().cpu())
    return float(1.0 / torch.cat(means).std())
