"""The built-in ×2 and ×4 upscalers: Real-ESRGAN's compact architecture (SRVGGNetCompact, which
spandrel loads as "Compact"), trained to undo bicubic downscaling on the synthetic world plus the
natural pictures that ship inside scikit-image.

Deterministic from the seed, resumable, with a progress bar; evaluated as PSNR gain over bicubic
on held-out pictures (synthetic scenes the training never drew, and scikit-image pictures kept
out of training), the number bench/upscale.py reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from tqdm import tqdm

from training.common import (
    Deadline,
    LogWriter,
    check_resume_config,
    config_dict,
    cosine_lr,
    load_state,
    save_state,
    step_batches,
    step_rng,
)

# scikit-image's bundled pictures (no download): most train, a few are held out for evaluation.
NATURAL_TRAIN = (
    "astronaut",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "camera",
    "moon",
    "brick",
    "grass",
    "gravel",
    "coins",
    "horse",
    "clock",
    "page",
    "text",
    # A cluttered garage photo (both stereo views): the most photographic texture the package ships.
    "stereo_motorcycle",
)
# (skimage.data.cat() is chelsea again: listing both counted that photo twice until 2026-11-23.)
NATURAL_HELD_OUT = ("coffee", "chelsea")


@dataclass(frozen=True)
class UpscalerConfig:
    seed: int = 1
    scale: int = 2
    num_feat: int = 32
    num_conv: int = 12
    steps: int = 6000
    batch: int = 16
    patch: int = 48  # low-resolution patch side
    lr: float = 1e-3  # 2e-4 had not left "nearest neighbour" after 600 steps; 1e-3 beat bicubic by then
    warmup: int = 100
    # Gradient-norm clip: a num_feat 64 model at lr 1e-3 spiked (L1 0.01 → 0.13, later 2.5) without it.
    grad_clip: float = 1.0
    n_synthetic: int = 512
    # Share of patches cut from the natural pictures: the synthetic ones are mostly flat colour,
    # where nearest-neighbour is already exact, and alone they teach "change nothing".
    natural_share: float = 0.8
    # "l1" (sharper edges, the usual SR loss) or "mse": PSNR is a mean-squared-error measure, and
    # where an edge's sub-pixel place is uncertain the L1 optimum (a sharp edge, maybe misplaced)
    # scores worse than the MSE optimum (a slightly soft edge). The L1-trained ×4 lost to bicubic on
    # 5 of 8 held-out synthetic scenes, all at shape edges.
    loss: str = "l1"
    # Natural crops get a Gaussian blur of random radius in [0, soften] px before the pair is made
    # (0: never). The training photos are sharp scans (astronaut, camera, the motorcycle pair); the
    # held-out camera photos are softer (bicubic already reaches 31.5 dB on chelsea at ×4). 1 000-step
    # ×4 fine-tunes: +0.748 dB on the photos without, +0.768 with 1.0, +0.777 with 2.0; shrinking
    # the crops instead (sharper targets) cost 0.03 dB.
    soften: float = 0.0
    # Chance that a natural crop's colour channels are put in a random order (0: never). Half of the
    # training photos are grey and the colour ones are few, so the body sees little colour structure
    # beyond what those few pictures have.
    channel_shuffle: float = 0.0
    checkpoint_every: int = 200
    eval_every: int = 1000

    def __post_init__(self) -> None:
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"upscaler loss must be 'l1' or 'mse', not {self.loss!r}")
        if not 0 <= self.channel_shuffle <= 1:
            raise ValueError(f"upscaler channel_shuffle must be in [0, 1], not {self.channel_shuffle}")
        if self.soften < 0:
            raise ValueError(f"upscaler soften must be 0 or more, not {self.soften}")


def natural_pictures(names: tuple[str, ...]) -> list[np.ndarray]:
    import skimage.data

    pictures = []
    for name in names:
        loaded = getattr(skimage.data, name)()
        # stereo_motorcycle gives (left view, right view, disparity map): keep the two photos.
        for image in loaded[:2] if isinstance(loaded, tuple) else (loaded,):
            image = np.asarray(image)
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)
            pictures.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return pictures


def synthetic_pictures(n: int, seed: int, size: int = 256) -> list[np.ndarray]:
    from world import random_scene, render

    rng = np.random.default_rng([seed, 23])
    return [render(random_scene(rng), size) for _ in range(n)]


def bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def make_model(cfg: UpscalerConfig) -> Any:
    from spandrel.architectures.Compact import Compact

    return Compact(num_feat=cfg.num_feat, num_conv=cfg.num_conv, upscale=cfg.scale)


def batch(
    synthetic: list[np.ndarray], natural: list[np.ndarray], cfg: UpscalerConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-res, high-res) uint8 patch pairs [B, 3, H, W]: random crops, flips, bicubic downscaling.
    uint8, so the float conversion happens on the training device: done here in float32 it took
    two thirds of each step's time, and the GPU sat idle."""
    hr_side = cfg.patch * cfg.scale
    lows, highs = [], []
    for _ in range(cfg.batch):
        pool = natural if natural and rng.random() < cfg.natural_share else synthetic
        image = pool[rng.integers(len(pool))]
        y = rng.integers(0, image.shape[0] - hr_side + 1)
        x = rng.integers(0, image.shape[1] - hr_side + 1)
        hr = image[y : y + hr_side, x : x + hr_side]
        if pool is natural and cfg.soften > 0:  # no extra draw otherwise: older runs keep their batches
            radius = rng.uniform(0, cfg.soften)
            hr = np.asarray(
                Image.fromarray(np.ascontiguousarray(hr)).filter(ImageFilter.GaussianBlur(radius))
            )
        if pool is natural and cfg.channel_shuffle > 0 and rng.random() < cfg.channel_shuffle:
            hr = hr[..., rng.permutation(3)]
        if rng.random() < 0.5:
            hr = hr[:, ::-1]
        hr = np.ascontiguousarray(np.rot90(hr, rng.integers(4)))
        lows.append(bicubic(hr, (cfg.patch, cfg.patch)))
        highs.append(hr)

    def tensor(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)

    return tensor(lows), tensor(highs)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@torch.no_grad()
def psnr_gain(upscale, pictures: list[np.ndarray], scale: int) -> float:
    """Mean PSNR(model) − PSNR(bicubic) over pictures downscaled by `scale` and enlarged again.
    `upscale(low: uint8 HWC) -> uint8 HWC`."""
    gains = []
    for image in pictures:
        h, w = image.shape[0] // scale * scale, image.shape[1] // scale * scale
        image = image[:h, :w]
        low = bicubic(image, (w // scale, h // scale))
        gains.append(psnr(upscale(low), image) - psnr(bicubic(low, (w, h)), image))
    return float(np.mean(gains))


def held_out(seed: int) -> dict[str, list[np.ndarray]]:
    """Pictures the training never sees: synthetic scenes of another seed, and natural ones."""
    return {"synthetic": synthetic_pictures(24, seed + 1000), "natural": natural_pictures(NATURAL_HELD_OUT)}


def adapt_to_scale(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], scale: int) -> dict:
    """`source`'s weights, fitted to a model of the same width (and the same or more depth: see
    `_deepen`) at `scale`: an exported upscaler of another scale starts a fine-tune. Only the last
    conv differs (3·s² outputs, one per colour and sub-pixel); each new sub-pixel (i, j) copies the
    source sub-pixel it falls in, so the start is the source's output enlarged by nearest neighbour
    — a picture, not noise, and the body's features (what the training time went into) carry over
    unchanged."""
    source = _deepen(source, target)
    out = {}
    for key, value in source.items():
        if key not in target:
            raise ValueError(f"--init-from weights have {key}, which this model does not")
        value = value.float()
        if value.shape != target[key].shape:
            value = _subpixel_head(value, target[key].shape, scale, key)
        out[key] = value
    return out


def _body_depth(state: dict[str, torch.Tensor]) -> int:
    """num_conv of a Compact state dict: body.0 is the first conv, then (conv, PReLU) per layer, then
    the last conv."""
    return (max(int(k.split(".")[1]) for k in state if k.startswith("body.")) - 2) // 2


def _deepen(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """`source` with identity layers added, evenly spaced, to reach `target`'s depth: each new conv
    is the identity (centre tap 1 on its own channel) and its PReLU has slope 1, so the deeper model
    starts as exactly the shallower one and training only has to add what the extra layers can do
    (the photos' gain had stopped growing with more steps of the shallower model). Width must match."""
    have, want = _body_depth(source), _body_depth(target)
    if want <= have:
        return source
    feat = source["body.0.weight"].shape[0]
    # Old layers 1..have keep their order; new identity layer i goes after old layer `after[i]`.
    added = want - have
    after = [max(1, min(have, round((i + 1) * have / (added + 1)))) for i in range(added)]
    order: list[int | None] = []  # old layer number, or None for an identity layer
    for k in range(1, have + 1):
        order.append(k)
        order.extend([None] * after.count(k))
    out = {k: v for k, v in source.items() if k.startswith(("body.0.", "body.1."))}
    identity = torch.zeros(feat, feat, 3, 3)
    identity[torch.arange(feat), torch.arange(feat), 1, 1] = 1.0
    for new, old in enumerate(order, start=1):
        if old is None:
            out[f"body.{2 * new}.weight"] = identity.clone()
            out[f"body.{2 * new}.bias"] = torch.zeros(feat)
            out[f"body.{2 * new + 1}.weight"] = torch.ones(feat)
        else:
            for part in ("weight", "bias"):
                out[f"body.{2 * new}.{part}"] = source[f"body.{2 * old}.{part}"]
            out[f"body.{2 * new + 1}.weight"] = source[f"body.{2 * old + 1}.weight"]
    for part in ("weight", "bias"):
        out[f"body.{2 * want + 2}.{part}"] = source[f"body.{2 * have + 2}.{part}"]
    return out


def _subpixel_head(value: torch.Tensor, shape: torch.Size, scale: int, key: str) -> torch.Tensor:
    from_scale = int(round((value.shape[0] / 3) ** 0.5))
    if value.shape[1:] != shape[1:] or 3 * from_scale**2 != value.shape[0] or shape[0] != 3 * scale**2:
        raise ValueError(
            f"--init-from weights: {key} is {tuple(value.shape)}, this model needs {tuple(shape)}"
        )
    # pixel_shuffle reads channel c·s² + i·s + j as colour c at sub-pixel (i, j).
    index = [
        c * from_scale**2 + (i * from_scale // scale) * from_scale + (j * from_scale // scale)
        for c in range(3)
        for i in range(scale)
        for j in range(scale)
    ]
    return value[index].clone()


def train_upscaler(
    run_dir: Path,
    cfg: UpscalerConfig,
    device: torch.device,
    deadline: Deadline,
    workers: int = 0,
    init_from: Path | None = None,
) -> bool:
    """Train (or resume) in `run_dir`; True when all steps are done. `workers`: processes that make
    the batches ahead (the result does not depend on it). A fresh run starts from `init_from`'s
    weights when given (an exported `.safetensors` of the same width, any depth up to this one's, at
    any scale: fine-tuning; see `adapt_to_scale`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    side = cfg.patch * cfg.scale
    synthetic = [p for p in synthetic_pictures(cfg.n_synthetic, cfg.seed) if min(p.shape[:2]) >= side]
    natural = [p for p in natural_pictures(NATURAL_TRAIN) if min(p.shape[:2]) >= side]
    torch.manual_seed(cfg.seed)
    model = make_model(cfg).to(device)
    state_path = run_dir / f"upscaler_x{cfg.scale}_state.pt"
    if init_from is not None and not state_path.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(adapt_to_scale(load_file(str(init_from)), model.state_dict(), cfg.scale))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if (state := load_state(state_path)) is not None:
        check_resume_config(state, cfg, state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    log = LogWriter(run_dir / f"upscaler_x{cfg.scale}_log.jsonl")
    evaluation = held_out(cfg.seed)

    def checkpoint() -> None:
        save_state(
            state_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "config": config_dict(cfg),
            },
        )

    def run(low: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(low.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
        return (model(x)[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    bar = tqdm(total=cfg.steps, initial=step, desc=f"upscaler x{cfg.scale}", dynamic_ncols=True)

    def make(at: int) -> tuple[torch.Tensor, torch.Tensor]:
        return batch(synthetic, natural, cfg, step_rng(cfg.seed, f"upscaler{cfg.scale}", at))

    for low, high in step_batches(make, step, cfg.steps, workers):
        if deadline.passed():
            checkpoint()
            bar.close()
            return False
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        low, high = (x.to(device, non_blocking=True).float().div_(255.0) for x in (low, high))
        loss = (F.mse_loss if cfg.loss == "mse" else F.l1_loss)(model(low), high)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 25 == 0:
            log.write(step=step, loss=round(loss.item(), 5))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            gains = {
                kind: round(psnr_gain(run, pictures, cfg.scale), 3) for kind, pictures in evaluation.items()
            }
            model.train()
            log.write(step=step, psnr_gain_db=gains)
            tqdm.write(f"upscaler x{cfg.scale} step {step}: PSNR gain over bicubic (dB) {gains}")
    bar.close()
    return True


def export_upscaler(run_dir: Path, scale: int, folder: Path, self_ensemble: int = 1) -> Path:
    """The trained weights as `atelier-x{scale}.safetensors` (fp16: a few hundred KB). A
    `self_ensemble` above 1 goes into the file's metadata: the passes the app's "Automatic"
    self-ensemble setting then runs it with (`engine/upscale/ensemble.py`)."""
    from safetensors.torch import save_file

    from engine.upscale.ensemble import METADATA_KEY, SYMMETRIES

    if self_ensemble not in SYMMETRIES:
        raise ValueError(f"self_ensemble must be one of {sorted(SYMMETRIES)}, not {self_ensemble}")

    state = load_state(run_dir / f"upscaler_x{scale}_state.pt")
    if state is None:
        raise FileNotFoundError(f"{run_dir} has no x{scale} upscaler: train it first")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"atelier-x{scale}.safetensors"
    metadata = {METADATA_KEY: str(self_ensemble)} if self_ensemble > 1 else None
    save_file({k: v.half().contiguous() for k, v in state["model"].items()}, str(path), metadata=metadata)
    return path
