"""Set up a diffusion fine-tune of the shipped built-in model (or any export of it).

Writes the shipped VAE as `RUN_DIR/vae_state.pt` (the diffusion stage trains on its latents) and
the shipped UNet and text encoder as `SOURCE_DIR/diffusion_state.pt`, in the place where
`--init-from SOURCE_DIR` reads a run's EMA weights:

    .venv/bin/python tools/prep_finetune.py --run-dir runs/ftc --source-dir runs/src
    .venv/bin/python tools/train_default_model.py --stage diffusion --run-dir runs/ftc \\
        --init-from runs/src --set ...

(The training run encodes its scenes with that VAE on first start, a few minutes on a CPU; a
`latents.pt` from an earlier run with the same VAE and seed can be copied in to skip that.)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="the fine-tune's run dir")
    parser.add_argument("--source-dir", type=Path, required=True, help="for --init-from")
    args = parser.parse_args(argv)

    from engine.models.builtin import BUILTIN_NAME, build_builtin_modules
    from engine.models.manager import ModelManager
    from training.common import save_state

    model = ModelManager(root=ROOT, device="cpu", precision="fp32").get(BUILTIN_NAME)
    unet, vae, text_encoder = build_builtin_modules()
    unet.load_state_dict(model.unet.state_dict())
    vae.load_state_dict(model.vae.state_dict())
    text_encoder.load_state_dict(model.text_encoder.state_dict())
    save_state(args.run_dir / "vae_state.pt", {"ema": vae.state_dict()})
    save_state(
        args.source_dir / "diffusion_state.pt",
        {"ema_unet": unet.state_dict(), "ema_text_encoder": text_encoder.state_dict()},
    )
    print(f"wrote {args.run_dir / 'vae_state.pt'} and {args.source_dir / 'diffusion_state.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
