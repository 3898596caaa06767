"""Draw the README's grid: 16 prompts through the built-in model, numbered, with the scorer's verdict.

    .venv/bin/python tools/builtin_grid.py [--out docs/images/builtin-grid.png]

Prints a Markdown list of the prompts (number, prompt, seed, what the scorer found wrong, if
anything) to paste under the picture. Euler a, 20 steps, CFG 7, 128×128, seeds 1..16.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "a large red circle at the top left on a blue background",
    "a large yellow star in the center on a black background",
    "a small white square at the bottom right on a green background",
    "a large blue triangle at the top on a yellow background",
    "a large green circle on the right on a pink background",
    "a small orange star at the top right on a blue background",
    "a large pink square on the left on a white background",
    "a large black triangle at the bottom on an orange background",
    "a small red triangle in the center on a white background",
    "a large white star at the bottom left on a red background",
    "a large yellow circle at the bottom right on a green background",
    "a small blue square at the top left on an orange background",
    "a large orange square in the center on a blue background",
    "a small pink circle at the bottom on a black background",
    "a large green star at the top on a white background",
    "a large red square at the bottom right on a yellow background",
]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "builtin-grid.png")
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    from engine.models.manager import ModelManager
    from world.adherence import generate_and_score

    model = ModelManager(root=ROOT, device="cpu").get()
    report = generate_and_score(model, PROMPTS, first_seed=1)
    tile, columns = 128, 4
    grid = Image.new("RGB", (columns * tile, (len(PROMPTS) // columns) * tile), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(report.images):
        x, y = (i % columns) * tile, (i // columns) * tile
        grid.paste(Image.fromarray(image), (x, y))
        draw.rectangle((x, y, x + 17, y + 12), fill="white")
        draw.text((x + 2, y + 1), str(i + 1), fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    for i, (prompt, score) in enumerate(zip(PROMPTS, report.scores, strict=True)):
        missed = [k for k, ok in score.items() if not ok]
        note = f" — scorer: wrong {', '.join(missed)}" if missed else ""
        print(f"{i + 1}. `{prompt}` (seed {i + 1}){note}")
    print(f"fractions: {report.fractions()}", file=sys.stderr)


if __name__ == "__main__":
    main()
