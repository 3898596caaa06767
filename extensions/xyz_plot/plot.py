"""Running an X/Y/Z plot: generate the cells one `ctx.process` call each, then the grids.

The result holds the full grid first (one sub-grid per Z value side by side, Z labels on top),
then the sub-grids when asked (only when there are several Z values: with one, the sub-grid is
the full grid), then every cell's pictures when asked.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from engine.output.grid_legend import draw_legend
from engine.output.images import image_grid
from engine.pipeline.results import GenerationResult
from engine.plugins.scripts import ScriptContext
from engine.schema.infotext import params_text

from .plan import Plan, PlannedAxis, make_plan

TITLE = "X/Y/Z plot"


def run(ctx: ScriptContext) -> GenerationResult:
    args = ctx.args
    margin = int(args.get("margin_size", 0) or 0)
    if margin < 0:
        raise ValueError(f"{TITLE}: grid margins must be >= 0 px, not {margin}")
    plan = make_plan(ctx.params, args, ctx.names)  # raises before anything is generated
    notes = _hires_notes(plan, ctx)
    results, interrupted = _generate(plan, ctx)
    done = [r for r in results if r is not None and r.images]
    if not done:
        return GenerationResult(params=plan.base, interrupted=interrupted, notes=notes)
    for result in done:
        notes += [n for n in result.notes if n not in notes]

    pictures = _cell_pictures(results)
    legend = bool(args.get("draw_legend", True))
    sub_grids = [_sub_grid(plan, pictures, iz, legend, margin) for iz in range(len(plan.z.values))]
    full = sub_grids[0] if len(sub_grids) == 1 else _z_grid(plan, sub_grids, legend, margin)

    first = done[0]
    out = GenerationResult(params=first.params, interrupted=interrupted, notes=notes)
    info = grid_infotext(first.infotexts[0], plan)
    _add(out, full, info, first.seeds[0], ctx.save_grid(full, info))
    if args.get("include_sub_grids") and len(sub_grids) > 1:
        per_z = len(plan.x.values) * len(plan.y.values)
        for iz, grid in enumerate(sub_grids):
            owner = next((r for r in results[iz * per_z : (iz + 1) * per_z] if r and r.images), first)
            info = grid_infotext(owner.infotexts[0], plan)
            _add(out, grid, info, owner.seeds[0], ctx.save_grid(grid, info))
    if args.get("include_lone_images"):
        for result in done:
            for image, text, seed, path in zip(
                result.images, result.infotexts, result.seeds, result.paths, strict=True
            ):
                _add(out, image, text, seed, path)
    return out


def _add(out: GenerationResult, image: Image.Image, infotext: str, seed: int, path: Any) -> None:
    out.images.append(image)
    out.infotexts.append(infotext)
    out.seeds.append(seed)
    out.paths.append(path)


def _generate(plan: Plan, ctx: ScriptContext) -> tuple[list[GenerationResult | None], bool]:
    """Every cell's result, by grid index (None: not generated because the user interrupted)."""
    results: list[GenerationResult | None] = [None] * len(plan.cells)
    order = plan.generation_order()
    for done, cell in enumerate(order):
        if ctx.job.interrupted:
            return results, True
        ctx.job.progress.textinfo = f"{TITLE}: cell {done + 1} of {len(order)}"
        result = ctx.process(cell.params, vae=cell.vae)
        results[cell.index] = result
        if result.interrupted:
            return results, True
    return results, ctx.job.interrupted


def _cell_pictures(results: list[GenerationResult | None]) -> list[Image.Image]:
    """One picture per cell: its image, its batch as a small grid, or a black square where the
    job was interrupted before the cell ran (so the legend still lines up)."""
    pictures: list[Image.Image | None] = []
    for result in results:
        images = result.images if result is not None else []
        pictures.append(image_grid(images) if len(images) > 1 else (images[0] if images else None))
    size = next(p.size for p in pictures if p is not None)
    return [p if p is not None else Image.new("RGB", size) for p in pictures]


def _sub_grid(plan: Plan, pictures: list[Image.Image], iz: int, legend: bool, margin: int) -> Image.Image:
    nx, ny = len(plan.x.values), len(plan.y.values)
    cells = pictures[iz * nx * ny : (iz + 1) * nx * ny]
    grid = image_grid(cells, rows=ny)
    if not legend and not margin:
        return grid
    columns = plan.x.labels if legend else [""] * nx
    rows = plan.y.labels if legend else [""] * ny
    return draw_legend(grid, grid.width // nx, grid.height // ny, columns, rows, margin)


def _z_grid(plan: Plan, sub_grids: list[Image.Image], legend: bool, margin: int) -> Image.Image:
    grid = image_grid(sub_grids, rows=1)
    if not legend and not margin:
        return grid
    columns = plan.z.labels if legend else [""] * len(sub_grids)
    return draw_legend(grid, grid.width // len(sub_grids), grid.height, columns, [""], margin)


def _axis_entries(planned: PlannedAxis, fixed_seeds: bool) -> dict[str, object]:
    if planned.axis.is_nothing:
        return {}
    entries: dict[str, object] = {
        f"{planned.name} Type": planned.axis.label,
        f"{planned.name} Values": planned.raw,
    }
    if planned.axis.is_seed and fixed_seeds:  # what the -1s became, so the grid can be redone
        entries[f"Fixed {planned.name} Values"] = ", ".join(str(v) for v in planned.values)
    return entries


def grid_infotext(cell_infotext: str, plan: Plan) -> str:
    """The first cell's infotext plus `Script: X/Y/Z plot, X Type: …, X Values: …` (and Y, Z),
    before its closing `Version` entry as A1111 writes script entries."""
    fixed = plan.base.seed != -1
    entries: dict[str, object] = {"Script": TITLE}
    for planned in plan.axes:
        entries.update(_axis_entries(planned, fixed))
    return insert_params(cell_infotext, params_text(entries))


def insert_params(infotext: str, extra: str) -> str:
    head, newline, last = infotext.rpartition("\n")
    at = last.rfind("Version: ")
    if at == 0:
        last = f"{extra}, {last}"
    elif at > 0 and last[at - 2 : at] == ", ":
        last = f"{last[: at - 2]}, {extra}, {last[at:]}"
    else:
        last = f"{last}, {extra}" if last else extra
    return f"{head}{newline}{last}"


def _hires_notes(plan: Plan, ctx: ScriptContext) -> list[str]:
    """Say so when an axis cannot change anything, rather than leave the user puzzled by a grid
    of identical pictures."""
    if ctx.kind != "txt2img" or getattr(plan.base, "enable_hr", False):
        return []
    return [
        f"{TITLE}: the {p.axis.label} axis changes nothing while hires fix is off"
        for p in plan.axes
        if p.axis.hires_only or p.axis.label == "Denoising"
    ]
