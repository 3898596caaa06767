"""Prompt adherence of the built-in model, graded by the automatic scorer.

Loads the default checkpoint through the ordinary model manager (registry → loader), generates one
picture per random caption with Euler a, 20 steps, CFG 7 at 128×128, and grades each picture.
Ends with one JSON line: {"n": N, "background": …, "colour": …, "shape": …, "position": …, "size": …}
(fractions), plus seconds per image, peak RSS, and what the scorer still reads after a VAE
round trip of N rendered scenes (the ceiling the VAE sets).

    .venv/bin/python bench/adherence.py --n 200 [--seed 0] [--grid out.png]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.models.manager import ModelManager  # noqa: E402
from world.adherence import generate_and_score, random_captions, vae_roundtrip_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="which random captions (and image seeds)")
    parser.add_argument("--grid", type=Path, default=None, help="also save the first 16 pictures here")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    manager = ModelManager(root=ROOT, device=args.device)
    model = manager.get()  # the default checkpoint: the built-in model on a fresh install
    captions = random_captions(args.n, args.seed)
    start = time.perf_counter()
    report = generate_and_score(model, captions, first_seed=args.seed * 100_000 + 1000)
    seconds = (time.perf_counter() - start) / max(1, args.n)
    if args.grid is not None:
        from training.common import save_grid

        save_grid(report.images[:16], args.grid, columns=4)
    for caption, score in zip(captions, report.scores, strict=True):
        missed = [a for a, ok in score.items() if not ok]
        if missed:
            print(f"missed {','.join(missed)}: {caption}", file=sys.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"n": args.n, **{k: round(v, 3) for k, v in report.fractions().items()}}
    result.update(model=model.info.title, seconds_per_image=round(seconds, 3), peak_rss_mb=round(peak_mb))
    vae = vae_roundtrip_scores(model.vae, args.n, args.seed)  # its ceiling on everything above
    result["vae_roundtrip"] = {k: round(v, 3) for k, v in vae.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
