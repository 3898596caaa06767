"""The axis types of the X/Y/Z plot: what a value means and which parameters it sets.

A cell starts from the job's parameters as a plain dict (`CellState`); each axis writes its value
into it (X, then Y, then Z, as A1111 applies them) and the dict is validated into the cell's
GenerationParams — the same thing a user would get by typing those values into the tab.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from engine.plugins.scripts import EngineNames

from .values import parse_number_items, split_list

MAX_PROMPT_ORDER_TOKENS = 6  # 6! = 720 orders; more is never what anyone wants in one grid


@dataclass
class CellState:
    values: dict[str, Any]  # the cell's parameters as fields, before validation
    vae: str | None = None  # the VAE axis rides beside the parameters (ctx.process(vae=...))


@dataclass(frozen=True)
class Axis:
    label: str
    kind: type = str  # how the values text is read: int / float ranges, or str items
    fields: tuple[str, ...] = ()  # the parameters a value is written to
    # A dropdown axis: its choices, from the engine's names. Values must be among them.
    choices: Callable[[EngineNames], Sequence[str]] | None = None
    # Maps one typed value to the accepted spelling, or None when it is not a choice.
    resolve: Callable[[str, EngineNames], str | None] | None = None
    read: Callable[[list[str]], list[Any]] | None = None  # str items -> values (default: as is)
    apply: Callable[[CellState, Any, list[Any]], None] | None = None  # default: set the fields
    show_label: bool = True  # legend "Steps: 20"; False: the value alone ("Euler a")
    is_seed: bool = False  # -1 values become one random seed each (unless "Keep -1 for seeds")
    # A1111's cost: the most expensive axis (a model switch) is iterated outermost, so it
    # changes as few times as possible.
    cost: float = 0.0
    hires_only: bool = False  # only has an effect with hires fix on (txt2img)
    shorten: Callable[[str], str] | None = None  # the legend's spelling of a long value

    @property
    def is_nothing(self) -> bool:
        return self.label == "Nothing"

    def values(self, raw: str | Sequence[str], names: EngineNames) -> list[Any]:
        """The values of `raw` (the values text, or the dropdown's picks); ValueError if bad."""
        if self.is_nothing:
            return [None]
        items = split_list(raw) if isinstance(raw, str) else [str(v).strip() for v in raw if str(v).strip()]
        if self.kind in (int, float):
            values = parse_number_items(items, self.kind)
        else:
            values = [self._choice(item, names) for item in items] if self.choices else items
            values = self.read(values) if self.read else values
        if not values:
            raise ValueError("no values given")
        return values

    def _choice(self, item: str, names: EngineNames) -> str:
        choices = list(self.choices(names))
        found = (self.resolve or (lambda v, _names: match_choice(v, choices)))(item, names)
        if found is None:
            shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
            raise ValueError(
                f"unknown {self.label.lower()} {item!r}; choose from: {shown or 'none available'}"
            )
        return found

    def set(self, state: CellState, value: Any, all_values: list[Any]) -> None:
        if self.apply:
            self.apply(state, value, all_values)
        else:
            for name in self.fields:
                state.values[name] = value

    def format(self, value: Any) -> str:
        """The value's legend text."""
        if self.is_nothing:
            return ""
        if isinstance(value, float):
            text = str(int(value)) if value.is_integer() else str(round(value, 8))
        elif isinstance(value, tuple):
            text = "x".join(map(str, value))
        elif isinstance(value, list):
            text = ", ".join(value)
        else:
            text = self.shorten(value) if self.shorten else str(value)
        return f"{self.label}: {text}" if self.show_label else text


def _file_name(name: str) -> str:
    """A model's title without folder and " [hash]": what a legend needs to tell models apart."""
    return PurePath(re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", name.strip())).name


def _short_name(name: str) -> str:
    """A model name without folder, " [hash]" and extension: how people usually type it."""
    base = _file_name(name)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return stem.casefold()


def match_choice(value: str, choices: Sequence[str]) -> str | None:
    """The choice `value` names: exactly, ignoring case, or by its short model name."""
    if value in choices:
        return value
    for test in (str.casefold, _short_name):
        hits = [c for c in choices if test(c) == test(value)]
        if len(hits) == 1:
            return hits[0]
    return None


def _resolve_sampler(value: str, names: EngineNames) -> str | None:
    found = match_choice(value, names.samplers)
    if found is not None:
        return found
    # Aliases and A1111's combined names ("DPM++ 2M Karras") are kept as typed: the parameter
    # model splits them exactly as it does for a user who types them into the tab.
    from engine.sampling.registry import resolve_sampler_and_schedule

    try:
        sampler, _ = resolve_sampler_and_schedule(value, None)
    except ValueError:
        return None
    return value if sampler in names.samplers else None


def _read_sizes(items: list[str]) -> list[tuple[int, int]]:
    sizes = []
    for item in items:
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x×X*]\s*(\d+)\s*)?", item)
        if not match:
            raise ValueError(f"cannot read size {item!r}: write it as WIDTHxHEIGHT, e.g. 512x768")
        width = int(match.group(1))
        sizes.append((width, int(match.group(2) or width)))
    return sizes


def _set_size(state: CellState, value: tuple[int, int], _all: list[Any]) -> None:
    state.values["width"], state.values["height"] = value


def _prompt_fields(state: CellState) -> list[str]:
    """The prompts a text axis edits: the prompts, and the hires-fix prompts when they are set."""
    names = ["prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"]
    return [n for n in names if state.values.get(n)]


def _search_replace(state: CellState, value: str, all_values: list[str]) -> None:
    search = all_values[0]  # A1111: the first value is what the others replace
    prompts = _prompt_fields(state)
    if not any(search in state.values[n] for n in prompts if n in ("prompt", "negative_prompt")):
        raise ValueError(f"{search!r} is not in the prompt or the negative prompt")
    for name in prompts:
        state.values[name] = state.values[name].replace(search, value)


def _permutations(items: list[str]) -> list[list[str]]:
    if len(items) > MAX_PROMPT_ORDER_TOKENS:
        raise ValueError(f"at most {MAX_PROMPT_ORDER_TOKENS} items (they make n! orders)")
    return [list(p) for p in itertools.permutations(items)]


def _reorder(state: CellState, order: list[str], _all: list[Any]) -> None:
    """Put the listed items into the places where the items appear in the prompt, in `order`."""
    prompt = state.values["prompt"]
    places = sorted((prompt.find(token), token) for token in order)
    missing = [token for at, token in places if at < 0]
    if missing:
        raise ValueError(f"{missing[0]!r} is not in the prompt")
    pieces, rest = [], prompt
    for _, token in places:  # cut the prompt around the items, earliest first
        at = rest.find(token)
        pieces.append(rest[:at])
        rest = rest[at + len(token) :]
    state.values["prompt"] = "".join(p + t for p, t in zip(pieces, order, strict=True)) + rest


def _set_vae(state: CellState, value: str, _all: list[Any]) -> None:
    state.vae = value


def _samplers(names: EngineNames) -> Sequence[str]:
    return names.samplers


AXES: tuple[Axis, ...] = (
    Axis("Nothing"),
    Axis("Seed", int, ("seed",), is_seed=True),
    Axis("Var. seed", int, ("subseed",), is_seed=True),
    Axis("Var. strength", float, ("subseed_strength",)),
    Axis("Steps", int, ("steps",)),
    Axis("Hires steps", int, ("hr_second_pass_steps",), hires_only=True),
    Axis("CFG Scale", float, ("cfg_scale",)),
    Axis("Prompt S/R", apply=_search_replace, show_label=False),
    Axis("Prompt order", read=_permutations, apply=_reorder, show_label=False),
    Axis("Sampler", fields=("sampler_name",), choices=_samplers, resolve=_resolve_sampler, show_label=False),
    Axis(
        "Hires sampler",
        fields=("hr_sampler_name",),
        choices=_samplers,
        resolve=_resolve_sampler,
        hires_only=True,
    ),
    Axis("Schedule type", fields=("scheduler",), choices=lambda n: n.schedulers),
    Axis(
        "Checkpoint name",
        fields=("checkpoint",),
        choices=lambda n: n.checkpoints,
        show_label=False,
        cost=1.0,
        shorten=_file_name,
    ),
    Axis("Size", read=_read_sizes, fields=("width", "height"), apply=_set_size),
    Axis("Denoising", float, ("denoising_strength",)),
    # A1111's one "Eta" is the noise of whichever sampler runs: ancestral/SDE ones or DDIM.
    Axis("Eta", float, ("eta_ancestral", "eta_ddim")),
    Axis("Sigma churn", float, ("s_churn",)),
    Axis("Sigma min", float, ("s_tmin",)),
    Axis("Sigma max", float, ("s_tmax",)),
    Axis("Sigma noise", float, ("s_noise",)),
    Axis("Schedule min sigma", float, ("sigma_min",)),
    Axis("Schedule max sigma", float, ("sigma_max",)),
    Axis("Schedule rho", float, ("rho",)),
    Axis("Clip skip", int, ("CLIP_stop_at_last_layers",)),
    Axis("UniPC order", int, ("uni_pc_order",)),
    Axis("VAE", choices=lambda n: n.vaes, apply=_set_vae, cost=0.7),
    Axis("Hires upscaler", fields=("hr_upscaler",), choices=lambda n: n.hires_upscalers, hires_only=True),
    # A1111 1.6's refiner axes (added last: the index of every older axis stays as it was)
    Axis(
        "Refiner checkpoint",
        fields=("refiner_checkpoint",),
        choices=lambda n: ("None", *n.checkpoints),
        show_label=False,
        cost=0.9,
        shorten=_file_name,
    ),
    Axis("Refiner switch at", float, ("refiner_switch_at",)),
    # Forge's flow-model axes (SD 3, Flux): the σ-schedule shift (0 = the model's own), and Flux
    # dev's distilled guidance
    Axis("Shift", float, ("shift",)),
    Axis("Distilled CFG Scale", float, ("distilled_cfg_scale",)),
)
AXIS_LABELS: tuple[str, ...] = tuple(a.label for a in AXES)


def axis_named(name: Any) -> Axis:
    """The axis a type value names: its label (any case), or its index (A1111's API sends those)."""
    if name is None or name == "":
        return AXES[0]
    if isinstance(name, int) and not isinstance(name, bool):
        if 0 <= name < len(AXES):
            return AXES[name]
    else:
        for axis in AXES:
            if axis.label.casefold() == str(name).strip().casefold():
                return axis
    raise ValueError(f"unknown axis type {name!r}; choose from: {', '.join(AXIS_LABELS)}")
