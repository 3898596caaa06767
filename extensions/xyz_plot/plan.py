"""From the script's values to the list of cells to generate, all checked before the first one.

A typo in the last value of the Z axis must fail at once with a message naming the axis and the
value, not after an hour of generation; so every cell's parameters are built and validated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from engine.pipeline.rng import resolve_seed
from engine.plugins.scripts import EngineNames
from engine.schema.params import MAX_SEED

from .axes import Axis, CellState, axis_named

AXIS_NAMES = ("X", "Y", "Z")


@dataclass(frozen=True)
class PlannedAxis:
    name: str  # "X", "Y" or "Z"
    axis: Axis
    values: list[Any]
    raw: str  # the values as the user gave them (the grid's infotext records this)
    vary_seeds: bool = False

    @property
    def labels(self) -> list[str]:
        return [self.axis.format(v) for v in self.values]


@dataclass(frozen=True)
class Cell:
    index: int  # ix + iy * nx + iz * nx * ny: where the cell sits in the grids
    ix: int
    iy: int
    iz: int
    params: Any  # GenerationParams / Img2ImgParams, validated
    vae: str | None


@dataclass(frozen=True)
class Plan:
    x: PlannedAxis
    y: PlannedAxis
    z: PlannedAxis
    base: Any  # the job's parameters, seeds resolved unless "Keep -1 for seeds"
    cells: list[Cell]  # in grid order

    @property
    def axes(self) -> tuple[PlannedAxis, PlannedAxis, PlannedAxis]:
        return self.x, self.y, self.z

    def generation_order(self) -> list[Cell]:
        """Cells in the order to generate them: the costliest axis (a checkpoint or VAE switch)
        outermost so that it changes as few times as possible; Z, Y, X otherwise."""
        ranked = sorted(
            zip(("iz", "iy", "ix"), (self.z, self.y, self.x), strict=True), key=lambda p: -p[1].axis.cost
        )
        return sorted(self.cells, key=lambda c: tuple(getattr(c, attr) for attr, _ in ranked))


def error_text(exc: Exception) -> str:
    """A pydantic error as one readable line ("steps: Input should be ... 1")."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def _raw_values(args: dict[str, Any], key: str, axis: Axis) -> tuple[str | list[str], str]:
    """(what to read, what to record): the dropdown's picks for a choice axis when there are any
    (the UI), else the text (the API, or a user who typed)."""
    picks = args.get(f"{key}_values_dropdown") or []
    if axis.choices is not None and picks:
        picks = [str(p) for p in picks]
        return picks, ", ".join(f'"{p}"' if "," in p else p for p in picks)
    text = args.get(f"{key}_values") or ""
    return str(text), str(text)


def read_axes(args: dict[str, Any], names: EngineNames, keep_minus_one: bool) -> list[PlannedAxis]:
    planned = []
    for name in AXIS_NAMES:
        key = name.lower()
        try:
            axis = axis_named(args.get(f"{key}_type"))
        except ValueError as exc:
            raise ValueError(f"X/Y/Z plot: {name} type: {exc}") from None
        raw, recorded = _raw_values(args, key, axis)
        try:
            values = axis.values(raw, names)
        except ValueError as exc:
            raise ValueError(f"X/Y/Z plot: {name} axis ({axis.label}): {exc}") from None
        if axis.is_seed and not keep_minus_one:  # A1111: each -1 becomes its own fixed seed
            values = [resolve_seed(v) if v == -1 else v for v in values]
        vary = bool(args.get(f"vary_seeds_{key}", False))
        planned.append(PlannedAxis(name, axis, values, "" if axis.is_nothing else recorded, vary))
    return planned


def _fixed_seeds(params: Any, planned: list[PlannedAxis]) -> Any:
    """The job's -1 seeds resolved once, so every cell shares them (A1111's fix_seed). The
    variation seed only where some cell uses it: otherwise the cells stay what a user would send."""
    update = {"seed": resolve_seed(params.seed)}
    varied = getattr(params, "subseed_strength", 0) > 0 or any(
        p.axis.label == "Var. strength" for p in planned
    )
    if varied and getattr(params, "subseed", None) == -1:
        update["subseed"] = resolve_seed(-1)
    return params.model_copy(update=update)


def _validate(cls: type, state: CellState) -> Any:
    return cls.model_validate(state.values)


def _check_fields(cls: type, planned: PlannedAxis) -> None:
    missing = [f for f in planned.axis.fields if f not in cls.model_fields]
    if missing:
        raise ValueError(
            f"X/Y/Z plot: {planned.name} axis ({planned.axis.label}) needs the parameter {missing[0]!r}, "
            f"which {cls.__name__} does not have"
        )


def _seed_offset(plan_axes: tuple[PlannedAxis, PlannedAxis, PlannedAxis], ix: int, iy: int, iz: int) -> int:
    """A1111's "Vary seeds": +ix along X, +iy * xdim along Y, +iz * xdim * ydim along Z, where an
    axis that does not vary seeds counts as one wide, so the offsets never collide."""
    x, y, z = plan_axes
    xdim = len(x.values) if x.vary_seeds else 1
    ydim = len(y.values) if y.vary_seeds else 1
    offset = 0
    if x.vary_seeds:
        offset += ix
    if y.vary_seeds:
        offset += iy * xdim
    if z.vary_seeds:
        offset += iz * xdim * ydim
    return offset


def make_plan(params: Any, args: dict[str, Any], names: EngineNames) -> Plan:
    keep = bool(args.get("no_fixed_seeds", False))
    x, y, z = read_axes(args, names, keep)
    base = params if keep else _fixed_seeds(params, [x, y, z])
    cls = type(base)
    dump = base.model_dump()
    for planned in (x, y, z):  # each value alone first, so an error names one axis and value
        _check_fields(cls, planned)
        for value in planned.values:
            state = CellState(dict(dump))
            try:
                planned.axis.set(state, value, planned.values)
                _validate(cls, state)
            except ValueError as exc:
                shown = planned.axis.format(value) or repr(value)
                raise ValueError(f"X/Y/Z plot: {planned.name} axis, {shown}: {error_text(exc)}") from None
    cells = []
    nx, ny = len(x.values), len(y.values)
    for iz, zv in enumerate(z.values):
        for iy, yv in enumerate(y.values):
            for ix, xv in enumerate(x.values):
                state = CellState(dict(dump))
                x.axis.set(state, xv, x.values)
                y.axis.set(state, yv, y.values)
                z.axis.set(state, zv, z.values)
                offset = _seed_offset((x, y, z), ix, iy, iz)
                if offset and state.values["seed"] != -1:  # a kept -1 stays random anyway
                    state.values["seed"] = (state.values["seed"] + offset) % (MAX_SEED + 1)
                try:
                    cell_params = _validate(cls, state)
                except ValueError as exc:
                    where = ", ".join(
                        a.axis.format(v) for a, v in ((x, xv), (y, yv), (z, zv)) if v is not None
                    )
                    raise ValueError(f"X/Y/Z plot: cell {where}: {error_text(exc)}") from None
                cells.append(Cell(ix + iy * nx + iz * nx * ny, ix, iy, iz, cell_params, state.vae))
    return Plan(x, y, z, base, cells)
