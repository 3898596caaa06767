"""The built-in "Prompts from file or textbox" script (extensions/prompts_from_file).

No model runs here: `ctx.process` is a fake that records the parameters of each generation and
returns one small picture per image, so the tests check what the script asks for, in what order.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.pipeline.results import GenerationResult
from engine.pipeline.rng import resolve_seed
from engine.plugins.args import arg_values
from engine.plugins.loader import MODULE_PREFIX, ExtensionManager
from engine.plugins.scripts import EngineNames, ScriptContext, run_script
from engine.schema.params import GenerationParams, Img2ImgParams
from engine.service.jobs import Job

ROOT = Path(__file__).resolve().parents[2]
TITLE = "Prompts from file or textbox"
NAME = "prompts-from-file"


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> ExtensionManager:
    manager = ExtensionManager(
        roots=[ROOT / "extensions"], state_file=tmp_path_factory.mktemp("ext") / "s.json"
    )
    manager.load_all()
    return manager


@pytest.fixture(scope="module")
def script(manager: ExtensionManager):
    return manager.script(TITLE)


@pytest.fixture(scope="module")
def parsing(manager: ExtensionManager):
    """The extension's parsing module, as the loader imported it (it is a package: relative imports)."""
    return sys.modules[f"{MODULE_PREFIX}.prompts_from_file.parsing"]


class FakeEngine:
    """Stands in for ctx.process: records each call, returns batch_size × n_iter pictures."""

    def __init__(self, job: Job, *, interrupt_after: int | None = None, notes: list[str] | None = None):
        self.job, self.interrupt_after, self.notes = job, interrupt_after, notes or []
        self.calls: list[GenerationParams] = []
        self.progress_seen: list[str] = []

    def process(self, params: GenerationParams, vae: str | None = None) -> GenerationResult:
        self.calls.append(params)
        self.progress_seen.append(self.job.progress.textinfo)
        params = params.with_seed(resolve_seed(params.seed))
        count = params.images_per_job
        seeds = [params.seed + i for i in range(count)]
        result = GenerationResult(
            params=params,
            images=[Image.new("RGB", (8, 8), (len(self.calls) * 40, 0, 0)) for _ in seeds],
            infotexts=[f"{params.prompt}\nSeed: {s}" for s in seeds],
            seeds=seeds,
            paths=[Path(f"{len(self.calls)}-{s}.png") for s in seeds],
            notes=list(self.notes),
        )
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            self.job.interrupt()
        return result


def make_ctx(
    params: GenerationParams, fake: FakeEngine | None = None, **args
) -> tuple[ScriptContext, FakeEngine]:
    job = fake.job if fake else Job(kind="txt2img")
    fake = fake or FakeEngine(job)
    names = EngineNames(("Euler a",), ("Automatic",), (), ("Automatic", "None"), ("Latent",))
    ctx = ScriptContext(
        kind="img2img" if isinstance(params, Img2ImgParams) else "txt2img",
        params=params,
        args=args,
        job=job,
        process=fake.process,
        names=names,
        save_grid=lambda image, text: None,
    )
    return ctx, fake


def run(script, params: GenerationParams, fake: FakeEngine | None = None, **args):
    ctx, fake = make_ctx(params, fake, **args)
    return run_script(script, ctx), fake


# -- loading and UI -------------------------------------------------------------------------------
def test_extension_loads_and_offers_its_script_on_both_tabs(manager: ExtensionManager):
    record = manager.record(NAME)
    assert record.status == "loaded", record.error
    assert [s.title for s in manager.scripts_for("txt2img") if s.extension == NAME] == [TITLE]
    assert [s.title for s in manager.scripts_for("img2img") if s.extension == NAME] == [TITLE]


def test_ui_builds_inside_blocks(script):
    import gradio as gr

    with gr.Blocks():
        components = script.ui()
    # A1111's order first, so positional API script_args line up.
    assert list(components) == ["iterate_seed", "same_seed", "prompt_position", "prompt_txt", "prompt_file"]
    assert isinstance(components["iterate_seed"], gr.Checkbox)
    assert components["iterate_seed"].label == "Iterate seed every line"
    assert components["same_seed"].label == "Use same random seed for all lines"
    assert isinstance(components["prompt_position"], gr.Radio)
    assert components["prompt_position"].value == "start"
    assert isinstance(components["prompt_txt"], gr.Textbox)
    assert components["prompt_txt"].label == "List of prompt inputs"
    assert isinstance(components["prompt_file"], gr.File)
    assert components["prompt_file"].type == "binary"  # the content, never a path (see below)


# -- parsing --------------------------------------------------------------------------------------
def test_blank_lines_are_skipped_and_numbers_kept(parsing):
    lines = parsing.prompt_lines("a cat\n\n   \r\n  a dog  \r\nbird")
    assert [(line.number, line.text) for line in lines] == [(1, "a cat"), (4, "a dog"), (5, "bird")]


def test_options_with_quoting_and_unquoted_prompt_words(parsing):
    known = set(GenerationParams.model_fields)
    line = '--prompt a red fox, (snow:1.2) --negative_prompt "blurry, low quality" --steps 30 --cfg_scale 5.5'
    assert parsing.parse_options(line, known).update == {
        "prompt": "a red fox, (snow:1.2)",
        "negative_prompt": "blurry, low quality",
        "steps": "30",
        "cfg_scale": "5.5",
    }
    styles = parsing.parse_options("--styles 'Film look' Sepia --sd_model my.safetensors --seed -1", known)
    assert styles.update == {"styles": ("Film look", "Sepia"), "checkpoint": "my.safetensors", "seed": "-1"}
    assert parsing.parse_options("--prompt ''", known).update == {"prompt": ""}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--stpes 30", "unknown option --stpes (did you mean --steps?)"),
        ("--steps", "--steps needs a value"),
        ("--steps 30 --steps 40", "--steps is given twice"),
        ("--sampler_name DPM++ 2M", "--sampler_name takes one value"),
        ('--prompt "a cat', "cannot split the line"),
        ("--prompt cat -- dog", "expected an option"),
    ],
)
def test_unreadable_option_lines(parsing, line, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parsing.parse_options(line, set(GenerationParams.model_fields))


def test_a_prompt_may_contain_dashes(script):
    result, fake = run(script, GenerationParams(), prompt_txt="a knight -- in armour --ar 16:9")
    assert [p.prompt for p in fake.calls] == ["a knight -- in armour --ar 16:9"]
    assert len(result.images) == 1


def test_each_line_gets_its_own_parameters(script):
    text = (
        "a cat\n"
        "\n"
        '--prompt "a dog" --negative_prompt ugly --steps 7 --width 256 --height 320 --batch_size 2\n'
        "--sampler_name 'DPM++ 2M' --scheduler Karras --n_iter 2 --seed 9\n"
    )
    base = GenerationParams(steps=20, seed=5, negative_prompt="")
    result, fake = run(script, base, prompt_txt=text)
    first, second, third = fake.calls
    assert (first.prompt, first.steps, first.seed) == ("a cat", 20, 5)
    assert (second.prompt, second.negative_prompt, second.steps) == ("a dog", "ugly", 7)
    assert (second.width, second.height, second.batch_size) == (256, 320, 2)
    assert (third.prompt, third.sampler_name, third.scheduler, third.n_iter, third.seed) == (
        "",
        "DPM++ 2M",
        "Karras",
        2,
        9,
    )
    # All pictures of all lines, in order, with their seeds, infotexts and paths.
    assert len(result.images) == len(result.seeds) == len(result.infotexts) == len(result.paths) == 5
    assert result.seeds == [5, 5, 6, 9, 10]
    assert result.infotexts[0].startswith("a cat")
    assert result.params.prompt == "a cat"  # the first line stands for the job
    assert not result.interrupted


def test_bad_value_names_the_line_and_nothing_is_made(script):
    text = "a cat\n\n--steps 30\n--steps 500\n"
    with pytest.raises(ValueError, match=r"Prompts from file, line 4: --steps: .*less than or equal to 150"):
        run(script, GenerationParams(), prompt_txt=text)
    ctx, fake = make_ctx(GenerationParams(), prompt_txt="a\nb\n--cfg_scale much")
    with pytest.raises(ValueError, match=r"line 3: --cfg_scale: .*valid number.*'much'"):
        run_script(script, ctx)
    assert fake.calls == []  # every line is checked before the first picture


def test_unknown_option_and_unknown_sampler_name_the_line(script):
    with pytest.raises(ValueError, match=r"line 2: unknown option --colour"):
        run(script, GenerationParams(), prompt_txt="a\n--colour red")
    with pytest.raises(ValueError, match=r"line 1: --sampler_name: unknown sampler 'Nope'"):
        run(script, GenerationParams(), prompt_txt="--sampler_name Nope")


def test_a1111_only_options_are_ignored_with_one_note(script):
    text = "--prompt a --outpath_samples /tmp/x\nb\n--prompt c --outpath_samples /tmp/y"
    result, fake = run(script, GenerationParams(), prompt_txt=text)
    assert [p.prompt for p in fake.calls] == ["a", "b", "c"]
    notes = [n for n in result.notes if "--outpath_samples" in n]
    assert len(notes) == 1 and "line 1, 3" in notes[0]


def test_no_prompts_is_an_error(script):
    with pytest.raises(ValueError, match="no prompts"):
        run(script, GenerationParams(), prompt_txt="  \n\n")


def test_img2img_lines_take_denoising_strength(script):
    base = Img2ImgParams(prompt="castle", denoising_strength=0.75)
    result, fake = run(script, base, prompt_txt="--denoising_strength 0.3\nfog")
    assert all(isinstance(p, Img2ImgParams) for p in fake.calls)
    assert [p.denoising_strength for p in fake.calls] == [0.3, 0.75]
    assert [p.prompt for p in fake.calls] == ["castle", "fog castle"]


# -- prompt position ------------------------------------------------------------------------------
def test_prompt_position_start_and_end(script):
    base = GenerationParams(prompt="oil painting", negative_prompt="blurry")
    _, fake = run(script, base, prompt_txt="a cat\n--prompt a dog --negative_prompt dark")
    assert [p.prompt for p in fake.calls] == ["a cat oil painting", "a dog oil painting"]
    assert [p.negative_prompt for p in fake.calls] == ["blurry", "dark blurry"]

    _, fake = run(script, base, prompt_txt="a cat\n--negative_prompt dark", prompt_position="end")
    assert [p.prompt for p in fake.calls] == ["oil painting a cat", "oil painting"]
    assert [p.negative_prompt for p in fake.calls] == ["blurry", "blurry dark"]


def test_empty_main_prompt_and_explicit_empty_line_prompt(script):
    _, fake = run(script, GenerationParams(prompt=""), prompt_txt="a cat")
    assert fake.calls[0].prompt == "a cat"
    _, fake = run(script, GenerationParams(prompt="main"), prompt_txt="--prompt '' --steps 3")
    assert fake.calls[0].prompt == ""


def test_bad_position_is_an_error(script):
    with pytest.raises(ValueError, match="start or end"):
        run(script, GenerationParams(), prompt_txt="a", prompt_position="middle")


# -- seeds ----------------------------------------------------------------------------------------
def test_without_seed_options_every_line_uses_the_job_seed(script):
    _, fake = run(script, GenerationParams(seed=42), prompt_txt="a\nb\nc")
    assert [p.seed for p in fake.calls] == [42, 42, 42]
    # A random job leaves each line random: the generation draws its own.
    _, fake = run(script, GenerationParams(seed=-1), prompt_txt="a\nb")
    assert [p.seed for p in fake.calls] == [-1, -1]


def test_same_random_seed_for_all_lines(script):
    _, fake = run(script, GenerationParams(seed=-1), prompt_txt="a\nb\nc", same_seed=True)
    seeds = [p.seed for p in fake.calls]
    assert seeds[0] != -1 and seeds == [seeds[0]] * 3


def test_iterate_seed_moves_on_by_the_pictures_of_each_line(script):
    base = GenerationParams(seed=100, batch_size=2)
    text = "a\nb\n--prompt c --n_iter 3\n--prompt d --seed 7\ne"
    _, fake = run(script, base, prompt_txt=text, iterate_seed=True)
    # 2 pictures, 2, then 2 × 3 = 6; line d keeps its own seed and the count goes on past it.
    assert [p.seed for p in fake.calls] == [100, 102, 104, 7, 112]


def test_iterate_from_a_random_seed_draws_it_once(script):
    _, fake = run(script, GenerationParams(seed=-1), prompt_txt="a\nb\nc", iterate_seed=True, same_seed=True)
    first = fake.calls[0].seed
    assert first != -1
    assert [p.seed for p in fake.calls] == [first, (first + 1) % 2**32, (first + 2) % 2**32]


# -- file upload ----------------------------------------------------------------------------------
def test_uploaded_file_replaces_the_textbox(script, tmp_path: Path):
    upload = tmp_path / "prompts.txt"
    upload.write_bytes("\ufefffrom file\r\n--prompt 'second line' --steps 4\r\n".encode())
    _, fake = run(script, GenerationParams(), prompt_txt="from box", prompt_file=upload.read_bytes())
    assert [p.prompt for p in fake.calls] == ["from file", "second line"]
    assert fake.calls[1].steps == 4


def test_without_upload_the_textbox_is_used(script):
    for empty in (None, ""):
        _, fake = run(script, GenerationParams(), prompt_txt="from box", prompt_file=empty)
        assert [p.prompt for p in fake.calls] == ["from box"]


def test_upload_as_bytes_is_read_too(script):
    _, fake = run(script, GenerationParams(), prompt_file=b"one\ntwo")
    assert [p.prompt for p in fake.calls] == ["one", "two"]


def test_an_upload_that_is_not_utf8_is_a_clear_error(script):
    with pytest.raises(ValueError, match="the uploaded file is not UTF-8 text"):
        run(script, GenerationParams(), prompt_file="caf\xe9".encode("latin-1"))


def test_a_path_from_a_client_is_content_never_a_file_read(script, tmp_path: Path):
    """An API client cannot make the server read a file: `prompt_file` holds content only, and a
    string is taken as the text itself."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    values = arg_values(script.args, {"prompt_file": str(secret)})
    assert values["prompt_file"] == str(secret).encode()
    _, fake = run(script, GenerationParams(), **values)
    assert [p.prompt for p in fake.calls] == [str(secret)]


# -- progress, interruption, notes ----------------------------------------------------------------
def test_progress_names_the_line(script):
    _, fake = run(script, GenerationParams(), prompt_txt="a\n\nb\nc")
    assert fake.progress_seen == [
        "Prompts from file: line 1 of 3",
        "Prompts from file: line 2 of 3",
        "Prompts from file: line 3 of 3",
    ]


def test_interrupt_stops_between_lines(script):
    job = Job(kind="txt2img")
    fake = FakeEngine(job, interrupt_after=2)
    result, fake = run(script, GenerationParams(seed=1), fake, prompt_txt="a\nb\nc\nd")
    assert [p.prompt for p in fake.calls] == ["a", "b"]
    assert result.interrupted
    assert len(result.images) == 2


def test_interrupted_before_the_first_line_returns_no_pictures(script):
    job = Job(kind="txt2img")
    job.interrupt()
    result, fake = run(script, GenerationParams(seed=-1), FakeEngine(job), prompt_txt="a\nb")
    assert fake.calls == [] and result.images == [] and result.interrupted
    assert result.params.seed != -1


def test_an_interrupted_line_ends_the_job(script):
    class Stopping(FakeEngine):
        def process(self, params, vae=None):
            result = super().process(params, vae)
            result.interrupted = True  # the user stopped inside this line's sampling
            return result

    result, fake = run(script, GenerationParams(), Stopping(Job()), prompt_txt="a\nb")
    assert len(fake.calls) == 1 and result.interrupted


def test_notes_of_each_line_are_carried_over_once(script):
    fake = FakeEngine(Job(), notes=["VAE decode fell back to fp32 (NaN)"])
    result, _ = run(script, GenerationParams(), fake, prompt_txt="a\nb")
    assert result.notes.count("VAE decode fell back to fp32 (NaN)") == 1
