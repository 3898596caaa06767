"""Prompts from file or textbox (A1111's built-in script): one generation per line of a list.

A line is either a prompt, put together with the prompt of the main box, or `--name value`
options (see parsing.py) that change any generation parameter for that line. Every line is read
and validated before the first picture is made, so a typo on line 40 costs no time.

Choices where A1111's behaviour had to be pinned down:
- The line's prompt and the main box's are joined with one space, the line first ("start", the
  default) or last ("end"), as A1111 does; the same for the negative prompts. A line that gives
  no prompt (`--steps 30`) keeps the main prompt as it is.
- "Iterate seed every line" moves the seed on by the number of pictures the previous line made
  (its batch_size × n_iter). A1111 adds the main box's batch_size × n_iter; the two agree unless a
  line changes the batch, and then ours never gives two lines the same seed. A line's own --seed
  is used for that line and the count goes on from where it was.
- With either seed box ticked, a random seed (-1) is drawn once, so lines share or continue it;
  with neither, each line of a -1 job gets its own random seed.
- Styles named with --styles are merged by the generation itself, like the job's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seed
from engine.plugins.args import ExtensionArgs
from engine.schema.params import MAX_SEED

from .parsing import IGNORED, MULTI_WORD, Options, is_command, parse_options, prompt_lines

TITLE = "Prompts from file or textbox"
SHORT = "Prompts from file"  # in messages and progress
POSITIONS = ("start", "end")


class PromptsFromFileArgs(ExtensionArgs):
    """In A1111's order, so positional `script_args` from A1111 clients line up."""

    iterate_seed: bool = False
    same_seed: bool = False
    prompt_position: Literal["start", "end"] = "start"
    prompt_txt: str | None = ""
    # The uploaded file's content. Only content, never a path: a path from an API client would
    # let it read any file of the server. (A string arrives as its UTF-8 bytes.)
    prompt_file: bytes | None = None


def setup(ext: Any) -> None:
    ext.script(TITLE, run, ui=build_ui, tabs=("txt2img", "img2img"), args=PromptsFromFileArgs)


def build_ui() -> dict[str, Any]:
    import gradio as gr  # only the UI needs it; the engine and the API run the script without it

    with gr.Row():
        iterate_seed = gr.Checkbox(False, label="Iterate seed every line")
        same_seed = gr.Checkbox(False, label="Use same random seed for all lines")
    prompt_position = gr.Radio(
        list(POSITIONS), value="start", label="Insert prompts at the", info="of the main prompt"
    )
    prompt_txt = gr.Textbox(
        label="List of prompt inputs",
        lines=4,
        placeholder='one prompt per line, or options: --prompt "a red fox" --steps 30 --seed 5',
    )
    prompt_file = gr.File(
        label="Upload prompt inputs",
        file_types=[".txt"],
        type="binary",  # run() gets the content; its lines replace the box's when given
    )
    # In A1111's order, so positional API `script_args` line up with A1111 clients.
    return {
        "iterate_seed": iterate_seed,
        "same_seed": same_seed,
        "prompt_position": prompt_position,
        "prompt_txt": prompt_txt,
        "prompt_file": prompt_file,
    }


@dataclass(frozen=True)
class PlannedLine:
    number: int  # the line's number in the text, for messages
    params: Any  # GenerationParams / Img2ImgParams of this line, validated
    own_seed: bool  # the line gave --seed: the seed options leave it alone
    ignored: tuple[str, ...]


def run(ctx: Any) -> GenerationResult:
    args = ctx.args
    position = args.get("prompt_position") or "start"
    if position not in POSITIONS:
        raise ValueError(f"{SHORT}: prompt position must be start or end, not {position!r}")
    text = source_text(args.get("prompt_file"), args.get("prompt_txt"))
    planned = plan_lines(text, ctx.params, position)

    iterate, same = bool(args.get("iterate_seed")), bool(args.get("same_seed"))
    seed = ctx.params.seed
    if (iterate or same) and seed == -1:
        seed = resolve_seed(seed)  # drawn once, so the lines can share it or count on from it

    parts: list[GenerationResult] = []
    interrupted = False
    for index, line in enumerate(planned, start=1):
        if ctx.job.interrupted:
            interrupted = True
            break
        ctx.job.progress.textinfo = f"{SHORT}: line {index} of {len(planned)}"
        params = line.params if line.own_seed else line.params.with_seed(seed)
        part = ctx.process(params)
        parts.append(part)
        if iterate:
            seed = (seed + line.params.images_per_job) % (MAX_SEED + 1)
        if part.interrupted:
            interrupted = True
            break
    return combined_result(parts, planned, ctx.params, interrupted)


def source_text(upload: bytes | None, typed: Any) -> str:
    """The uploaded file's text when there is one, else the box's."""
    if upload:
        return _decode(upload, "the uploaded file")
    return typed or ""


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")  # -sig: Windows editors start the file with a BOM
    except UnicodeDecodeError as exc:
        raise ValueError(f"{SHORT}: {name} is not UTF-8 text") from exc


def plan_lines(text: str, base: Any, position: str) -> list[PlannedLine]:
    """Every line's parameters, or a ValueError naming the first bad line."""
    lines = prompt_lines(text)
    if not lines:
        raise ValueError(f"{SHORT}: no prompts; type one per line or upload a .txt file")
    model = type(base)
    known = set(model.model_fields)
    defaults = base.model_dump()
    planned = []
    for line in lines:
        try:
            options = (
                parse_options(line.text, known) if is_command(line.text) else Options({"prompt": line.text})
            )
            update = dict(options.update)
            for key in MULTI_WORD:
                if key in update:
                    update[key] = join_prompts(update[key], getattr(base, key), position)
            params = model.model_validate({**defaults, **update})
        except ValidationError as exc:  # before ValueError: it is one, with a long message
            raise ValueError(f"{SHORT}, line {line.number}: {describe(exc)}") from exc
        except ValueError as exc:
            raise ValueError(f"{SHORT}, line {line.number}: {exc}") from exc
        planned.append(PlannedLine(line.number, params, "seed" in update, tuple(options.ignored)))
    return planned


def join_prompts(line_prompt: str, main_prompt: str, position: str) -> str:
    """A1111's rule: join with a space when both are given; an empty line value (`--prompt ""`)
    means an empty prompt, not the main one."""
    if not (line_prompt and main_prompt):
        return line_prompt
    return f"{line_prompt} {main_prompt}" if position == "start" else f"{main_prompt} {line_prompt}"


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as option names and short reasons."""
    parts = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            parts.append(f"--{error['loc'][0]}: {message} (got {error['input']!r})")
        else:  # a whole-model check (unknown sampler, σ range): its message names the value
            parts.append(message)
    return "; ".join(parts)


def combined_result(
    parts: list[GenerationResult], planned: list[PlannedLine], base: Any, interrupted: bool
) -> GenerationResult:
    """All pictures of all lines, in order; the first line's parameters stand for the job."""
    params = parts[0].params if parts else base.with_seed(resolve_seed(base.seed))
    result = GenerationResult(params=params, interrupted=interrupted)
    for part in parts:
        result.images.extend(part.images)
        result.infotexts.extend(part.infotexts)
        result.seeds.extend(part.seeds)
        result.paths.extend(part.paths)
        result.notes.extend(note for note in part.notes if note not in result.notes)
    result.notes.extend(ignored_notes(planned))
    return result


def ignored_notes(planned: list[PlannedLine]) -> list[str]:
    """One note per ignored option, naming its lines (a 500-line A1111 list gives one note, not 500)."""
    lines_of: dict[str, list[int]] = {}
    for line in planned:
        for name in line.ignored:
            lines_of.setdefault(name, []).append(line.number)
    notes = []
    for name, numbers in lines_of.items():
        where = ", ".join(map(str, numbers))
        notes.append(f"{SHORT}: --{name} ignored (line {where}): {IGNORED[name]}")
    return notes
