"""The built-in upscalers against bicubic, and upscaling throughput tiled vs untiled.

- psnr_gain_x2_db / psnr_gain_x4_db: mean PSNR(built-in) − PSNR(bicubic) on held-out pictures,
  each downscaled by the factor and enlarged again: the lower of the two means over synthetic
  scenes the training never drew and over scikit-image pictures kept out of training (both are
  printed as gain_by_set). null while models/builtin/upscalers/ lacks the model. As the app runs by
  default: the Settings' self-ensemble "Automatic", i.e. the passes each file asks for (the ×4: 2,
  as is and mirrored across the diagonal; the ×2: 1). psnr_gain_x*_db_single_pass: one pass;
  psnr_gain_x*_db_self_ensemble: all 8 flips and rotations (`engine/upscale/ensemble.py`).
- mpix_per_s_tiled / mpix_per_s_untiled: output megapixels per second upscaling a 512×512 picture
  ×2 through the app's upscaler library, with the default tiles (192 px, overlap 8) and in one piece,
  in this process, alternating (median of --repeats); the built-in ×2 model, or a seeded random one of
  the same architecture when it is not trained yet. mpix_per_s_x4_tiled: the built-in ×4 on a
  256×256 picture (the same output size) as the app runs it, mpix_per_s_x4_tiled_single_pass: in one
  pass. peak_rss_mb: this process's peak memory.

    .venv/bin/python bench/upscale.py [--repeats 5]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

BUILTIN = ROOT / "models" / "builtin" / "upscalers"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="the training seed (decides the held-out scenes)")
    args = parser.parse_args()

    import torch

    from engine.upscale.upscalers import UpscalerLibrary
    from training.upscaler_stage import UpscalerConfig, held_out, make_model, psnr_gain

    variants = {"": "Automatic", "_single_pass": "Off", "_self_ensemble": "8 passes"}
    # psnr_gain_x{2,4}_db{,_single_pass,_self_ensemble} → the worse set's gain (None: no model)
    gains: dict[str, float | None] = {f"psnr_gain_x{s}_db{v}": None for s in (2, 4) for v in variants}
    per_kind: dict[str, float] = {}
    library = UpscalerLibrary(ROOT / "models", extra_folders=(BUILTIN,))
    evaluation = held_out(args.seed)
    for scale in (2, 4):
        name = f"atelier-x{scale}"
        if name not in library.names():
            continue

        for suffix, ensemble in variants.items():

            def run(low: np.ndarray, name: str = name, scale: int = scale, ensemble: str = ensemble):
                return np.asarray(
                    library.upscale(Image.fromarray(low), scale, name, tile=0, ensemble=ensemble)
                )

            for kind, pictures in evaluation.items():
                per_kind[f"x{scale}_{kind}{suffix}"] = round(psnr_gain(run, pictures, scale), 3)
            worst = min(per_kind[f"x{scale}_{kind}{suffix}"] for kind in evaluation)
            gains[f"psnr_gain_x{scale}_db{suffix}"] = round(worst, 3)

    with tempfile.TemporaryDirectory() as scratch:
        timing_library, name = library, "atelier-x2"
        if gains["psnr_gain_x2_db"] is None:  # time the architecture with seeded random weights
            from safetensors.torch import save_file

            torch.manual_seed(0)
            folder = Path(scratch) / "ESRGAN"
            folder.mkdir()
            save_file(make_model(UpscalerConfig(scale=2)).state_dict(), str(folder / "random-x2.safetensors"))
            timing_library, name = UpscalerLibrary(Path(scratch)), "random-x2"
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
        timing_library.upscale(picture.resize((64, 64)), 2, name)  # warm-up
        seconds: dict[str, list[float]] = {"tiled": [], "untiled": []}
        for r in range(args.repeats):
            for mode in ("tiled", "untiled") if r % 2 == 0 else ("untiled", "tiled"):
                start = time.perf_counter()
                timing_library.upscale(picture, 2, name, tile=192 if mode == "tiled" else 0, overlap=8)
                seconds[mode].append(time.perf_counter() - start)
        x4_rates: dict[str, float | None] = {"": None, "_single_pass": None}
        if gains["psnr_gain_x4_db"] is not None:
            quarter = picture.resize((256, 256), Image.Resampling.BICUBIC)
            library.upscale(quarter.resize((32, 32)), 4, "atelier-x4")  # warm-up
            for suffix, ensemble in (("", "Automatic"), ("_single_pass", "Off")):
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    library.upscale(quarter, 4, "atelier-x4", tile=192, overlap=8, ensemble=ensemble)
                    times.append(time.perf_counter() - start)
                x4_rates[suffix] = round(1024 * 1024 / 1e6 / statistics.median(times), 3)
    megapixels = 1024 * 1024 / 1e6
    tiled = megapixels / statistics.median(seconds["tiled"])
    untiled = megapixels / statistics.median(seconds["untiled"])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"PSNR gain over bicubic: ×2 {gains['psnr_gain_x2_db']} dB, ×4 {gains['psnr_gain_x4_db']} dB",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                **gains,
                "mpix_per_s_tiled": round(tiled, 3),
                "mpix_per_s_untiled": round(untiled, 3),
                "mpix_per_s_x4_tiled": x4_rates[""],
                "mpix_per_s_x4_tiled_single_pass": x4_rates["_single_pass"],
                "peak_rss_mb": round(peak_mb, 1),
                "gain_by_set": per_kind,
            }
        )
    )


if __name__ == "__main__":
    main()
