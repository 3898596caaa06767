"""Train Atelier's built-in model from nothing and write it into models/builtin/.

    .venv/bin/python tools/train_default_model.py            # all stages, then export
    .venv/bin/python tools/train_default_model.py --stage vae --max-minutes 30
    .venv/bin/python tools/train_default_model.py --stage controlnet --run-dir runs/cn
    .venv/bin/python tools/train_default_model.py --stage controlnet-export --run-dir runs/cn

    .venv/bin/python tools/train_default_model.py --stage upscaler --run-dir runs/up --set scale=2
    .venv/bin/python tools/train_default_model.py --stage upscaler-export --run-dir runs/up

The upscaler stages train and export the built-in ×2 / ×4 upscalers (models/builtin/upscalers).
The controlnet stages train and export the built-in canny ControlNet on top of the shipped
built-in model (models/builtin), which stays frozen; `--set` then sets ControlNetConfig fields.

Every stage checkpoints into --run-dir and resumes where it stopped; with the same --seed a resumed
run draws exactly the batches an uninterrupted one would. Uses the GPU when there is one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def overrides(config_class, pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE strings → typed keyword arguments for a config dataclass (errors name the keys)."""
    from dataclasses import fields

    types = {f.name: f.type for f in fields(config_class)}
    result: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
        kind = types[key]
        if kind in (str, "str"):
            result[key] = value
        else:
            result[key] = float(value) if kind in (float, "float") else int(value)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stage",
        choices=(
            "vae",
            "diffusion",
            "export",
            "all",
            "controlnet",
            "controlnet-export",
            "upscaler",
            "upscaler-export",
        ),
        default="all",
    )
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes making batches ahead (controlnet, upscaler stages)"
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    parser.add_argument(
        "--stop-at-step", type=int, default=None, help="diffusion stage: checkpoint and stop at this step"
    )
    parser.add_argument(
        "--export-to", type=Path, default=None, help="folder for the exported model (default: models/builtin)"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="PATH",
        help="fine-tune instead of starting afresh: the diffusion and controlnet stages take another"
        " run's dir, the upscaler stage an exported atelier-x*.safetensors",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a diffusion-stage setting, e.g. --set steps=12000 --set pyramid_discount=0.8",
    )
    args = parser.parse_args(argv)

    import torch

    from engine.models.builtin import build_builtin_modules
    from training.common import Deadline, pick_device
    from training.vae_stage import VaeConfig, train_vae

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    deadline = Deadline.in_minutes(args.max_minutes)
    if args.stage.startswith("controlnet"):
        return controlnet_stage(args, device, deadline)
    if args.stage.startswith("upscaler"):
        return upscaler_stage(args, device, deadline)
    unet, vae, text_encoder = build_builtin_modules()
    print(f"device {device}, threads {torch.get_num_threads()}, run dir {args.run_dir}", flush=True)

    if args.stage in ("vae", "all"):
        if not train_vae(vae, args.run_dir, VaeConfig(seed=args.seed), device, deadline):
            print("stopped at the time limit; run again to resume", flush=True)
            return 0
    if args.stage in ("diffusion", "all"):
        from training.diffusion_stage import DiffusionConfig, train_diffusion

        cfg = DiffusionConfig(seed=args.seed, **overrides(DiffusionConfig, args.set))
        done = train_diffusion(
            unet, vae, text_encoder, args.run_dir, cfg, device, deadline,
            init_from=args.init_from, stop_at=args.stop_at_step,
        )  # fmt: skip
        if not done:
            print("stopped (time limit or --stop-at-step); run again to resume", flush=True)
            return 0
    if args.stage in ("export", "all"):
        from training.export import export_builtin

        path = export_builtin(args.run_dir, args.export_to)
        print(f"wrote {path}", flush=True)
    return 0


def upscaler_stage(args: argparse.Namespace, device, deadline) -> int:
    """Train (one scale per run of --stage upscaler) or export the built-in upscalers."""
    from engine.models.builtin import builtin_paths
    from training.upscaler_stage import UpscalerConfig, export_upscaler, train_upscaler

    if args.stage == "upscaler-export":
        folder = args.export_to or builtin_paths()[0].parent / "upscalers"
        # The export's one setting: `--set self_ensemble=2` (the passes the app runs it with).
        options = dict(item.split("=", 1) for item in args.set)
        if set(options) - {"self_ensemble"}:
            raise SystemExit(f"--stage upscaler-export takes only --set self_ensemble=N, not {args.set}")
        passes = int(options.get("self_ensemble", 1))
        for scale in (2, 4):
            if (args.run_dir / f"upscaler_x{scale}_state.pt").is_file():
                print(f"wrote {export_upscaler(args.run_dir, scale, folder, passes)}", flush=True)
        return 0
    cfg = UpscalerConfig(seed=args.seed, **overrides(UpscalerConfig, args.set))
    done = train_upscaler(args.run_dir, cfg, device, deadline, workers=args.workers, init_from=args.init_from)
    if not done:
        print("stopped at the time limit; run again to resume", flush=True)
    return 0


def controlnet_stage(args: argparse.Namespace, device, deadline) -> int:
    """Train or export the built-in canny ControlNet against the shipped built-in model."""
    import torch

    from engine.models.builtin import BUILTIN_NAME
    from engine.models.manager import ModelManager
    from training.controlnet_stage import ControlNetConfig, train_controlnet
    from training.export import export_controlnet

    manager = ModelManager(root=ROOT, device=str(device), precision="fp32", cache_dir=args.run_dir / "cache")
    model = manager.get(BUILTIN_NAME)
    if args.stage == "controlnet-export":
        print(f"wrote {export_controlnet(args.run_dir, model.unet, args.export_to)}", flush=True)
        return 0
    torch.manual_seed(args.seed)
    cfg = ControlNetConfig(seed=args.seed, **overrides(ControlNetConfig, args.set))
    if not train_controlnet(
        model, args.run_dir, cfg, deadline, workers=args.workers, init_from=args.init_from
    ):
        print("stopped at the time limit; run again to resume", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
