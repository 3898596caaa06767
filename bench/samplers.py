"""Every sampler on the built-in model: its cost outside the model call, and its picture quality.

For each of the 20 samplers (each on its A1111 default schedule type, CFG 7, 128×128, with the
built-in model's preferred sampler settings as a fresh install applies them: NGMS 3 on every step,
`models/builtin/atelier-tiny.json`; `--a1111-defaults` leaves them out):

- **overhead_share**: the share of the sampling loop's time spent outside the UNet call — the
  sampler's own arithmetic, noise draws (Brownian paths for SDE samplers), σ→t lookups, CFG
  combination and the per-step callback. Measured by timing the UNet calls inside `stages.denoise`
  and the whole `denoise` call in the same run (median of `--repeats` runs at 20 steps). Goal < 5 %.
- **adherence**: the mean over the scorer's attributes (background, colour, shape, size, position)
  of the fraction of pictures that get the attribute right, at the sampler's usual step count (20;
  DPM fast 30, as its steps are model calls: `world.adherence.usual_steps`),
  over `--n` random captions; `all_right` is the fraction of pictures with every attribute right;
  `attributes` the five fractions, and `meets_bars` whether they reach the built-in model's bars
  (background ≥ 0.95, colour ≥ 0.85, shape ≥ 0.70, position ≥ 0.70; `world.adherence.BARS`).

The full run also fills a sampler × step-count table (10 / 20 / 30 steps) of adherence, printed as
Markdown on stderr for docs/benchmarks.md. Ends with one JSON line mapping each sampler name to
`{"overhead_share": …, "adherence": …, "all_right": …, "attributes": {…}, "meets_bars": …}`.

    .venv/bin/python bench/samplers.py [--quick] [--n 32] [--repeats 5]

`--quick`: 8 captions, usual step count only, 2 timing repeats (a couple of minutes on 2 CPU cores).
`--a1111-defaults`: without the checkpoint's preferred sampler settings (A1111's bare defaults).
`--schedules`: also tries every schedule type on each sampler that misses the bars on its default one
and adds `schedules_meeting_bars` to its JSON entry.
`--set NAME=VALUE` (repeatable): a sampler parameter for every run, by its A1111 option name, e.g.
`--set s_min_uncond=1.5 --set s_min_uncond_all=true` (Negative Guidance minimum sigma on all steps).
`--samplers "LMS,PLMS"`: only these.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.models.manager import ModelManager  # noqa: E402
from engine.pipeline import stages  # noqa: E402
from engine.sampling.registry import AUTOMATIC, sampler_names, schedule_names  # noqa: E402
from engine.schema.params import GenerationParams  # noqa: E402
from engine.schema.sampler_params import SAMPLER_NAMES as SAMPLER_PARAMETERS  # noqa: E402
from engine.schema.sampler_params import sampler_options  # noqa: E402
from engine.service.jobs import Job  # noqa: E402
from world.adherence import (  # noqa: E402
    BENCH_CFG,
    BENCH_STEPS,
    generate_and_score,
    meets_bars,
    preferred_overrides,
    random_captions,
    usual_steps,
)

TIMING_STEPS = 20
TABLE_STEPS = (10, 20, 30)
PROMPT = "a large red circle at the top left on a blue background"


class TimedUNet:
    """Forwards to the UNet and adds up the wall time of its calls (synchronising a GPU first, so
    the time lands on the right side of the split)."""

    def __init__(self, unet):
        self.unet, self.seconds, self.calls = unet, 0.0, 0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def __call__(self, *args, **kwargs):
        self._sync()
        start = time.perf_counter()
        out = self.unet(*args, **kwargs)
        self._sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def __getattr__(self, name):  # config, dtype, device… of the wrapped UNet
        return getattr(self.unet, name)


@torch.inference_mode()
def overhead_share(model, sampler: str, repeats: int, overrides: dict | None = None) -> tuple[float, int]:
    """(median share of `denoise` time outside the UNet, UNet calls per run) at TIMING_STEPS."""
    params = GenerationParams(
        prompt=PROMPT, sampler_name=sampler, steps=TIMING_STEPS, cfg_scale=BENCH_CFG, seed=1,
        width=128, height=128, **(overrides or {}),
    )  # fmt: skip
    options = sampler_options(params)
    conditioning = stages.encode_prompt(model, params)
    sigmas = stages.make_sigmas(model, params, options)
    shares, calls = [], 0
    for i in range(repeats + 1):  # the first run warms caches and is not counted
        # A copy of the loaded model whose UNet is timed: the shared model is never modified.
        timed = TimedUNet(model.unet)
        timed_model = dataclasses.replace(model, unet=timed)
        x, rng = stages.prepare_latents(timed_model, params, [params.seed], float(sigmas[0]))
        start = time.perf_counter()
        stages.denoise(timed_model, params, x, sigmas, conditioning, rng, Job(), options)
        total = time.perf_counter() - start
        if i:
            shares.append((total - timed.seconds) / total)
        calls = timed.calls
    return statistics.median(shares), calls


def adherence(
    model,
    sampler: str,
    steps: int,
    captions: list[str],
    scheduler: str = AUTOMATIC,
    overrides: dict | None = None,
) -> tuple[float, float, dict[str, float]]:
    """(mean attribute fraction, fraction of pictures with every attribute right, the fractions)."""
    report = generate_and_score(
        model, captions, sampler=sampler, steps=steps, scheduler=scheduler, overrides=overrides
    )
    fractions = report.fractions()
    all_right = sum(all(s.values()) for s in report.scores) / max(1, len(report.scores))
    return statistics.mean(fractions.values()), all_right, fractions


def schedules_meeting_bars(
    model, sampler: str, captions: list[str], overrides: dict | None = None
) -> list[str]:
    """The schedule types on which `sampler` reaches the bars at its usual steps: for a sampler whose
    default schedule misses them, the evidence for which schedule suits it on this model (a stiff
    guided denoiser punishes a multistep method where a schedule's steps are large relative to σ)."""
    meeting = []
    for schedule in schedule_names():
        if schedule == AUTOMATIC:
            continue  # the default schedule, already measured
        mean, _, fractions = adherence(model, sampler, usual_steps(sampler), captions, schedule, overrides)
        attributes = ", ".join(f"{k} {v:.2f}" for k, v in fractions.items())
        print(f"  {sampler} on {schedule}: {mean:.3f} ({attributes})", file=sys.stderr, flush=True)
        if meets_bars(fractions):
            meeting.append(schedule)
    return meeting


def parse_overrides(pairs: list[str]) -> dict:
    """`--set` pairs → GenerationParams fields, checked (and typed) by GenerationParams itself."""
    raw = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in SAMPLER_PARAMETERS:
            raise SystemExit(
                f"--set {pair!r}: expected NAME=VALUE with NAME among {', '.join(SAMPLER_PARAMETERS)}"
            )
        raw[name] = value
    try:
        checked = GenerationParams(**raw)
    except ValueError as exc:  # pydantic's ValidationError names the field and the value
        raise SystemExit(f"--set: {exc}") from None
    return {name: getattr(checked, name) for name in raw}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 captions, 20 steps only, 2 repeats")
    parser.add_argument("--n", type=int, default=32, help="captions per sampler and step count")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per sampler")
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="for each sampler that misses the bars on its default schedule type: every schedule type"
        " at the usual step count, and which of them reach the bars",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a sampler parameter (A1111 option name) for every run, e.g. s_min_uncond=1.5",
    )
    parser.add_argument("--samplers", default="", help="comma-separated sampler names (default: all)")
    parser.add_argument(
        "--a1111-defaults",
        action="store_true",
        help="without the checkpoint's preferred sampler settings (its <stem>.json), A1111's bare defaults",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    set_overrides = parse_overrides(args.set)
    chosen = [s.strip() for s in args.samplers.split(",") if s.strip()] or sampler_names()
    n, repeats = (8, 2) if args.quick else (args.n, args.repeats)

    model = ModelManager(root=ROOT, device=args.device).get()  # the built-in model on a fresh install
    preferred = {} if args.a1111_defaults else preferred_overrides(model)
    overrides = {**preferred, **set_overrides}
    print(f"sampler settings beyond A1111's defaults: {overrides or 'none'}", file=sys.stderr, flush=True)
    captions = random_captions(n, seed=0)
    result: dict[str, dict[str, float]] = {}
    table: dict[str, dict[int, float]] = {}
    for sampler in chosen:
        share, calls = overhead_share(model, sampler, repeats, overrides)
        table[sampler] = {}
        usual = usual_steps(sampler)
        step_counts = (usual,) if args.quick else tuple(sorted({*TABLE_STEPS, usual}))
        for steps in step_counts:
            mean, all_right, fractions = adherence(model, sampler, steps, captions, AUTOMATIC, overrides)
            table[sampler][steps] = mean
            if steps == usual:
                result[sampler] = {
                    "usual_steps": usual,
                    "overhead_share": round(share, 4),
                    "adherence": round(mean, 3),
                    "all_right": round(all_right, 3),
                    "attributes": {k: round(v, 3) for k, v in fractions.items()},
                    "meets_bars": meets_bars(fractions),
                }
        print(
            f"{sampler}: overhead {share:.1%} ({calls} UNet calls), adherence "
            + ", ".join(f"{s} steps {table[sampler][s]:.3f}" for s in step_counts),
            file=sys.stderr,
            flush=True,
        )
    if args.schedules:
        for sampler, row in result.items():
            if not row["meets_bars"]:
                row["schedules_meeting_bars"] = schedules_meeting_bars(model, sampler, captions, overrides)
    columns = sorted({s for row in table.values() for s in row})
    header = "| Sampler | " + " | ".join(f"{s} steps" for s in columns)
    print(header + " | bars at usual steps | overhead |", file=sys.stderr)
    print("|---" * (len(columns) + 3) + "|", file=sys.stderr)
    for sampler, row in table.items():
        cells = " | ".join(f"{row[s]:.2f}" if s in row else "–" for s in columns)
        usual = result[sampler]["usual_steps"]
        bars = ("yes" if result[sampler]["meets_bars"] else "no") + (
            f" ({usual})" if usual != BENCH_STEPS else ""
        )
        print(f"| {sampler} | {cells} | {bars} | {result[sampler]['overhead_share']:.1%} |", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
