"""The Prompt matrix (A1111's script): `a cat | red | in a hat` makes a picture for every
combination of the optional parts after the first `|` — 2**(n-1) pictures — and a grid whose
legend shows each part active (plain) or left out (grey, struck through).

Picture i holds optional part k when bit k of i is set, so picture 0 is the first part alone and
the last one has every part. The grid is 2**ceil(k/2) columns wide (k optional parts), filled
row by row: the first half of the parts varies along the columns, the rest along the rows.
"""

from __future__ import annotations

from PIL import Image

from engine.output.grid_legend import draw_prompt_matrix
from engine.output.images import image_grid
from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seed
from engine.plugins.scripts import ScriptContext
from engine.schema.params import MAX_SEED

TITLE = "Prompt matrix"
MAX_OPTIONAL_PARTS = 10  # 1024 pictures; one more part doubles it
PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}


def split_parts(prompt: str) -> list[str]:
    """The prompt's parts around `|`, trimmed of spaces and stray commas."""
    return [part.strip().strip(",").strip() for part in prompt.split("|")]


def combinations(prompt: str, *, at_start: bool = False, delimiter: str = "comma") -> list[str]:
    """Every picture's prompt, in picture order (see the module text)."""
    if delimiter not in DELIMITERS:
        raise ValueError(f"{TITLE}: joining char must be one of {', '.join(DELIMITERS)}, not {delimiter!r}")
    fixed, *optional = split_parts(prompt)
    if not optional:
        raise ValueError(f"{TITLE}: the prompt has no parts separated by '|' (e.g. 'a cat | red | in a hat')")
    if len(optional) > MAX_OPTIONAL_PARTS:
        raise ValueError(
            f"{TITLE}: {len(optional)} optional parts would make {2 ** len(optional)} pictures "
            f"(at most {MAX_OPTIONAL_PARTS} parts)"
        )
    prompts = []
    for number in range(2 ** len(optional)):
        chosen = [part for k, part in enumerate(optional) if number & (1 << k)]
        parts = [*chosen, fixed] if at_start else [fixed, *chosen]
        prompts.append(DELIMITERS[delimiter].join(p for p in parts if p))
    return prompts


def grid_rows(optional_parts: int) -> int:
    return 1 << (optional_parts // 2)


def run(ctx: ScriptContext) -> GenerationResult:
    args = ctx.args
    prompt_type = str(args.get("prompt_type", "positive")).lower()
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"{TITLE}: select prompt must be positive or negative, not {prompt_type!r}")
    margin = int(args.get("margin_size", 0) or 0)
    if margin < 0:
        raise ValueError(f"{TITLE}: grid margins must be >= 0 px, not {margin}")
    field = "prompt" if prompt_type == "positive" else "negative_prompt"
    source = getattr(ctx.params, field)
    prompts = combinations(
        source,
        at_start=bool(args.get("put_at_start", False)),
        delimiter=str(args.get("variations_delimiter", "comma")).lower(),
    )
    seed = resolve_seed(ctx.params.seed)  # one seed for all, so only the prompt changes
    different = bool(args.get("different_seeds", False))
    cls, dump = type(ctx.params), ctx.params.model_dump()
    # One picture per call: the batch settings would only repeat each combination.
    jobs = [
        cls.model_validate(
            {
                **dump,
                field: text,
                "seed": (seed + i) % (MAX_SEED + 1) if different else seed,
                "batch_size": 1,
                "n_iter": 1,
            }
        )
        for i, text in enumerate(prompts)
    ]

    out = GenerationResult(params=ctx.params.model_copy(update={"seed": seed}))
    pictures: list[Image.Image | None] = []
    for i, params in enumerate(jobs):
        if ctx.job.interrupted:
            out.interrupted = True
            break
        ctx.job.progress.textinfo = f"{TITLE}: picture {i + 1} of {len(jobs)}"
        result = ctx.process(params)
        out.notes += [n for n in result.notes if n not in out.notes]
        pictures.append(result.images[0] if result.images else None)
        for picture in zip(result.images, result.infotexts, result.seeds, result.paths, strict=True):
            _append(out, *picture)
        if result.interrupted:
            out.interrupted = True
            break
    if not out.images:
        return out

    size = next(p.size for p in pictures if p is not None)
    cells = [p if p is not None else Image.new("RGB", size) for p in pictures]
    cells += [Image.new("RGB", size)] * (len(jobs) - len(cells))  # interrupted: keep the layout
    optional = split_parts(source)[1:]
    rows = grid_rows(len(optional))
    grid = image_grid(cells, rows=rows)
    columns = len(cells) // rows
    grid = draw_prompt_matrix(grid, grid.width // columns, grid.height // rows, optional, margin)
    info = out.infotexts[0]  # A1111: the grid carries the first picture's infotext
    path = ctx.save_grid(grid, info)
    out.images.insert(0, grid)
    out.infotexts.insert(0, info)
    out.seeds.insert(0, out.seeds[0])
    out.paths.insert(0, path)
    return out


def _append(out: GenerationResult, image, infotext, seed, path) -> None:
    out.images.append(image)
    out.infotexts.append(infotext)
    out.seeds.append(seed)
    out.paths.append(path)
