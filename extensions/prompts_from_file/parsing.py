"""Reading the list of prompt inputs: which lines count, and what a `--name value` line asks for.

Nothing here knows the engine: a line becomes a dict of parameter updates (values still strings,
as typed) that the script validates against the job's own parameter model, so the model's
constraints stay the one place that says what a good value is.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

# These take every word up to the next option, so `--prompt a red fox --steps 30` works unquoted
# (A1111 does the same for exactly these two).
MULTI_WORD = ("prompt", "negative_prompt")
# Each following word is one style name: `--styles "Film look" Sepia`.
LIST_OPTIONS = ("styles",)
# A1111 spellings of our parameter names.
ALIASES = {"sd_model": "checkpoint"}
# Options A1111's script accepts that have nothing to act on here. A list written for A1111 should
# still run, so their value is consumed and the result says it was ignored, rather than refusing.
IGNORED = {
    "subseed": "variation seeds are not supported",
    "subseed_strength": "variation seeds are not supported",
    "seed_resize_from_h": "variation seeds are not supported",
    "seed_resize_from_w": "variation seeds are not supported",
    "sampler_index": "sampler numbers differ from A1111's; use --sampler_name",
    "outpath_samples": "pictures are saved in the usual output folder",
    "outpath_grids": "this script makes no grid",
    "do_not_save_grid": "this script makes no grid",
    "do_not_save_samples": "saving follows the Settings",
    "prompt_for_display": "the infotext shows the prompt used",
    "restore_faces": "face restoration is not available",
    "tiling": "tiling is not available",
}


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, counting blank lines too, so an error points at the right line of the file
    text: str  # stripped


@dataclass
class Options:
    update: dict[str, Any] = field(default_factory=dict)  # parameter name -> value
    ignored: list[str] = field(default_factory=list)  # names of IGNORED options the line gave


def prompt_lines(text: str) -> list[Line]:
    """The non-blank lines of `text`, stripped, with their line numbers."""
    lines = (Line(number, raw.strip()) for number, raw in enumerate(text.splitlines(), start=1))
    return [line for line in lines if line.text]


def is_command(text: str) -> bool:
    """A line of options starts with one. A1111 tries any line containing "--" and falls back to a
    plain prompt when that fails; deciding on the first characters instead lets a prompt contain
    "--" and lets a mistyped option line be reported instead of being drawn as a prompt."""
    return text.startswith("--")


def parse_options(text: str, known: Collection[str]) -> Options:
    """`--name value ...` with shell-like quoting. `known`: the parameter names the job accepts.
    ValueError (without the line number: the caller knows it) for anything it cannot read."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:  # shlex's message: "No closing quotation" / "No escaped character"
        raise ValueError(f"cannot split the line into options ({exc})") from None
    options = Options()
    pos = 0
    while pos < len(tokens):
        flag = tokens[pos]
        if not flag.startswith("--") or flag == "--":
            raise ValueError(f"expected an option like --steps, found {flag!r}")
        end = pos + 1
        while end < len(tokens) and not tokens[end].startswith("--"):
            end += 1
        name, values = flag[2:], tokens[pos + 1 : end]
        pos = end
        if not values:
            raise ValueError(f"{flag} needs a value")
        target = ALIASES.get(name, name)
        if target not in known:
            if name in IGNORED:
                _one_value(flag, values)
                options.ignored.append(name)
                continue
            raise ValueError(f"unknown option {flag}{_suggestion(name, known)}")
        if target in options.update:
            raise ValueError(f"{flag} is given twice")
        if target in MULTI_WORD:
            options.update[target] = " ".join(values)
        elif target in LIST_OPTIONS:
            options.update[target] = tuple(values)
        else:
            options.update[target] = _one_value(flag, values)
    return options


def _one_value(flag: str, values: list[str]) -> str:
    if len(values) > 1:
        shown = " ".join(values)
        raise ValueError(f"{flag} takes one value, got {len(values)} ({shown!r}); quote a value with spaces")
    return values[0]


def _suggestion(name: str, known: Collection[str]) -> str:
    candidates = [*known, *ALIASES, *IGNORED]
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean --{close[0]}?)" if close else ""
