"""What the built-in model's preferred sampler settings cost or save in time.

The built-in model prefers NGMS 3 on every step (`models/builtin/atelier-tiny.json`): below σ 3 a
step runs the prompt alone, without the unconditional half of the CFG batch. This times one
txt2img picture per sampler with those settings and with A1111's bare defaults, alternating the two
in the same process (median of `--repeats`), and prints one JSON line mapping each sampler to
`{"preferred_s": …, "a1111_s": …, "ratio": …}` (ratio < 1: the preferred settings are faster).

    .venv/bin/python bench/preferred_speed.py [--samplers "Euler,DPM++ 2M"] [--size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.models.manager import ModelManager  # noqa: E402
from engine.pipeline.txt2img import txt2img  # noqa: E402
from engine.schema.params import GenerationParams  # noqa: E402
from world.adherence import BENCH_CFG, preferred_overrides  # noqa: E402

PROMPT = "a large red circle at the top left on a blue background"


def seconds(model, sampler: str, size: int, overrides: dict) -> float:
    params = GenerationParams(
        prompt=PROMPT, sampler_name=sampler, steps=20, cfg_scale=BENCH_CFG, seed=1, width=size, height=size,
        **overrides,
    )  # fmt: skip
    start = time.perf_counter()
    txt2img(model, params)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samplers", default="Euler,Euler a,DPM++ 2M,Heun")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model = ModelManager(root=ROOT, device=args.device).get()
    preferred = preferred_overrides(model)
    print(f"preferred sampler settings: {preferred}", file=sys.stderr)
    result = {}
    for sampler in [s.strip() for s in args.samplers.split(",") if s.strip()]:
        seconds(model, sampler, args.size, preferred)  # warm-up, not counted
        times: dict[str, list[float]] = {"preferred": [], "a1111": []}
        for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
            times["preferred"].append(seconds(model, sampler, args.size, preferred))
            times["a1111"].append(seconds(model, sampler, args.size, {}))
        ours, theirs = statistics.median(times["preferred"]), statistics.median(times["a1111"])
        result[sampler] = {
            "preferred_s": round(ours, 3),
            "a1111_s": round(theirs, 3),
            "ratio": round(ours / theirs, 3),
        }
        print(f"{sampler}: {result[sampler]}", file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
