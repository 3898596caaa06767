"""A1111's prompt syntax: prompt editing, alternation, composable AND, emphasis and BREAK.

Three independent passes, in the order the engine applies them:

1. `split_and(prompt)` → [(sub-prompt, weight)] — composable diffusion: "a cat AND a dog:0.5".
2. `prompt_schedule(sub_prompt, steps)` → [(end_at_step, text)] — prompt editing
   `[from:to:when]`, `[to:when]`, `[from::when]` (`when` < 1 is a fraction of the steps) and
   alternation `[a|b|c]` (one option per step), nested in any order. Entry i is used while the
   0-based sampling step is ≤ its end_at_step, as in A1111 (so "[a:b:10]" of 20 steps uses "a" for
   steps 0–10 and "b" for 11–19).
3. `parse_emphasis(text)` → [(text, weight)] — `(x)` ×1.1, `[x]` ÷1.1, `(x:1.3)`, escapes
   `\\( \\) \\[ \\] \\\\`, and `BREAK` as the marker (BREAK, -1).

Malformed input never raises: a bracket that does not close (or a construct that does not parse)
is plain text, as A1111 does. Written here rather than with a grammar library because A1111's own
parser is a lark grammar whose ambiguity resolution is the behaviour to match; the cases it settles
are pinned by the table in tests/unit/test_prompt_parser.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK = ("BREAK", -1.0)

# -- 1. AND -----------------------------------------------------------------------------------------
_AND = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts of a composable prompt with their weights (1.0 when not given)."""
    parts = []
    for part in _AND.split(prompt):
        match = _TRAILING_WEIGHT.match(part)
        assert match is not None  # the pattern matches every string
        text, weight = match.group(1), match.group(2)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


# -- 2. prompt editing and alternation --------------------------------------------------------------
@dataclass(frozen=True)
class _Scheduled:
    before: list[_Node]
    after: list[_Node]
    when: float


@dataclass(frozen=True)
class _Alternate:
    options: list[list[_Node]]


_Node = str | _Scheduled | _Alternate
_NUMBER = re.compile(r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\]")  # unsigned, like lark's
_SPECIAL = "\\[]():|"


class _Parser:
    """Recursive descent over the prompt. `sequence` stops at the characters its caller handles
    (']' ':' '|' ')'); a construct that fails to parse is backed out and its opening bracket taken
    as a literal character."""

    def __init__(self, text: str):
        self.text = text

    def sequence(self, pos: int, stops: str, top: bool = False) -> tuple[list[_Node], int]:
        nodes: list[_Node] = []
        text = self.text
        while pos < len(text):
            ch = text[pos]
            if ch == "\\" and pos + 1 < len(text):
                nodes.append(text[pos : pos + 2])  # escapes stay in the text for the emphasis pass
                pos += 2
            elif ch == "[":
                parsed = self.square(pos)
                if parsed is None:
                    if not top:
                        return nodes, pos  # inside a construct a stray '[' fails it
                    nodes.append(ch)
                    pos += 1
                else:
                    nodes.append(parsed[0])
                    pos = parsed[1]
            elif ch == "(":
                parsed = self.round(pos)
                if parsed is None:
                    if not top:
                        return nodes, pos
                    nodes.append(ch)
                    pos += 1
                else:
                    nodes.extend(parsed[0])
                    pos = parsed[1]
            elif ch in stops:
                return nodes, pos
            elif ch in "]):|":
                if not top:
                    return nodes, pos
                nodes.append(ch)  # stray closing bracket or colon at the top level: literal
                pos += 1
            else:
                end = pos
                while end < len(text) and text[end] not in _SPECIAL:
                    end += 1
                end = max(end, pos + 1)
                nodes.append(text[pos:end])
                pos = end
        return nodes, pos

    def round(self, pos: int) -> tuple[list[_Node], int] | None:
        """'(' prompt [':' prompt] ')': emphasis, kept as text; only its insides may be scheduled."""
        inner, end = self.sequence(pos + 1, "):")
        if end < len(self.text) and self.text[end] == ":":
            weight, end = self.sequence(end + 1, ")")
            inner = [*inner, ":", *weight]
        if end >= len(self.text) or self.text[end] != ")":
            return None
        return ["(", *inner, ")"], end + 1

    def square(self, pos: int) -> tuple[_Node, int] | None:
        """'[' ... ']' as prompt editing, alternation or de-emphasis, tried in that order."""
        first, end = self.sequence(pos + 1, "]:|")
        if end >= len(self.text):
            return None
        ch = self.text[end]
        if ch == "]":
            return _Group(["[", *first, "]"]), end + 1
        if ch == "|":
            options = [first]
            while end < len(self.text) and self.text[end] == "|":
                option, end = self.sequence(end + 1, "]|")
                options.append(option)
            if end < len(self.text) and self.text[end] == "]":
                return _Alternate(options), end + 1
            return None
        # ':' — [to:when], [from:to:when] or [from::when]
        number = _NUMBER.match(self.text, end + 1)
        if number is not None:  # [to:when]
            return _Scheduled([], first, float(number.group(1))), number.end()
        second, end2 = self.sequence(end + 1, "]:")
        if end2 < len(self.text) and self.text[end2] == ":":
            number = _NUMBER.match(self.text, end2 + 1)
            if number is not None:
                return _Scheduled(first, second, float(number.group(1))), number.end()
        return None


class _Group(list):
    """A bracketed run kept as text (de-emphasis '[x]'), which may still contain schedules."""


def _parse(prompt: str) -> list[_Node]:
    nodes, _ = _Parser(prompt).sequence(0, "", top=True)
    return nodes


def _resolve_when(when: float, steps: int) -> int:
    value = when * steps if when < 1 else when
    return min(steps, int(value))


def _collect_steps(nodes: list[_Node], steps: int, found: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Scheduled):
            at = _resolve_when(node.when, steps)
            if at >= 1:
                found.add(at)
            _collect_steps(node.before, steps, found)
            _collect_steps(node.after, steps, found)
        elif isinstance(node, _Alternate):
            found.update(range(1, steps + 1))
            for option in node.options:
                _collect_steps(option, steps, found)
        elif isinstance(node, _Group):
            _collect_steps(list(node), steps, found)


def _text_at(nodes: list[_Node], step: int, steps: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            chosen = node.before if step <= _resolve_when(node.when, steps) else node.after
            out.append(_text_at(chosen, step, steps))
        elif isinstance(node, _Alternate):
            out.append(_text_at(node.options[(step - 1) % len(node.options)], step, steps))
        else:
            out.append(_text_at(list(node), step, steps))
    return "".join(out)


class ScheduledPrompt(NamedTuple):
    end_at_step: int
    text: str


def prompt_schedule(prompt: str, steps: int) -> list[ScheduledPrompt]:
    """The texts a prompt takes over `steps` sampling steps, each with the last step it is used at
    (1-based step numbers as A1111 counts them; see the module docstring)."""
    steps = max(1, int(steps))
    try:
        nodes = _parse(prompt)
    except RecursionError:  # absurd nesting: the whole prompt as text
        return [ScheduledPrompt(steps, prompt)]
    found = {steps}
    _collect_steps(nodes, steps, found)
    return [ScheduledPrompt(step, _text_at(nodes, step, steps)) for step in sorted(found)]


# -- 3. emphasis and BREAK -------------------------------------------------------------------------
_ATTENTION = re.compile(
    r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:"
)  # the token classes of A1111's emphasis syntax (a published format, not code)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """[(text, weight)] runs of a prompt; `BREAK` appears as ("BREAK", -1). Unclosed brackets
    weight everything after them; unmatched closing brackets are literal text (A1111's rules)."""
    runs: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        # BREAK keeps its marker weight inside brackets (A1111 multiplies it too, and then no
        # longer recognises it as a break: "(a BREAK b)" loses its chunk boundary there).
        for run in runs[start:]:
            if run[1] != BREAK[1] or run[0] != BREAK[0]:
                run[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            runs.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(runs))
        elif token == "[":
            square_open.append(len(runs))
        elif weight is not None and round_open and _is_number(weight):
            multiply_from(round_open.pop(), float(weight))
        elif weight is not None and round_open:  # "(x:1.2.3)": the bad number stays as text
            runs.append([token[: token.rindex(")")].rstrip(), 1.0])
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    runs.append(list(BREAK))
                runs.append([part, 1.0])
    for start in round_open:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for run in runs:
        if merged and run[1] == merged[-1][1] and run[1] != BREAK[1] and merged[-1][1] != BREAK[1]:
            merged[-1][0] += run[0]
        else:
            merged.append(run)
    merged = [r for r in merged if r[0] != "" or r[1] == BREAK[1]]
    return [(t, float(w)) for t, w in merged] or [("", 1.0)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
