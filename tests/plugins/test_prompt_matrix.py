"""The Prompt matrix script: combinations and their order, options, seeds, grid and legend,
interruption, infotext — against a fake `ctx.process` (no model)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.output.grid_legend import draw_legend, layout_legend, prompt_matrix_headers
from engine.pipeline.results import GenerationResult
from engine.plugins.scripts import EngineNames, ScriptContext
from engine.schema.infotext import build_infotext
from engine.schema.params import MAX_SEED, GenerationParams
from engine.service.jobs import Job
from extensions.prompt_matrix import matrix

CELL = 64
NAMES = EngineNames(("Euler a",), ("Automatic",), (), ("Automatic", "None"), ("Latent",))


def picture(params) -> Image.Image:
    key = f"{params.prompt}|{params.negative_prompt}|{params.seed}".encode()
    return Image.new("RGB", (params.width, params.height), tuple(hashlib.sha256(key).digest()[:3]))


def make_ctx(prompt="a cat | red | in a hat", *, interrupt_after=None, negative="", seed=7, **args):
    job = Job()
    calls, grids = [], []

    def process(params, vae=None):
        calls.append((params, job.progress.textinfo))
        result = GenerationResult(params=params)
        result.images.append(picture(params))
        result.infotexts.append(build_infotext(params, seed=params.seed, model_name="fake", model_hash="abc"))
        result.seeds.append(params.seed)
        result.paths.append(Path(f"/out/{len(calls)}.png"))
        if interrupt_after is not None and len(calls) >= interrupt_after:
            job.interrupt()
        return result

    def save_grid(image, infotext):
        grids.append((image, infotext))
        return Path("/grids/1.png")

    params = GenerationParams(
        prompt=prompt, negative_prompt=negative, width=CELL, height=CELL, seed=seed, batch_size=2
    )
    return ScriptContext("txt2img", params, args, job, process, NAMES, save_grid), calls, grids


def test_combinations_in_picture_order():
    assert matrix.combinations("a cat | red | in a hat") == [
        "a cat",
        "a cat, red",
        "a cat, in a hat",
        "a cat, red, in a hat",
    ]
    assert matrix.combinations("a cat|red,|in a hat", at_start=True, delimiter="space") == [
        "a cat",
        "red a cat",
        "in a hat a cat",
        "red in a hat a cat",
    ]
    assert len(matrix.combinations("a | b | c | d | e")) == 16
    assert matrix.combinations("| red | blue") == ["", "red", "blue", "red, blue"]


@pytest.mark.parametrize(
    ("prompt", "options", "message"),
    [
        ("a cat", {}, "no parts separated by '|'"),
        ("a" + " | x" * 11, {}, "would make 2048 pictures"),
        ("a | b", {"delimiter": "tab"}, "joining char"),
    ],
)
def test_bad_prompts_and_options(prompt, options, message):
    with pytest.raises(ValueError, match=message):
        matrix.combinations(prompt, **options)


def test_run_generates_every_combination_with_one_seed():
    ctx, calls, grids = make_ctx()
    result = matrix.run(ctx)
    assert [p.prompt for p, _ in calls] == matrix.combinations("a cat | red | in a hat")
    assert {p.seed for p, _ in calls} == {7}
    # Each picture is one plain generation of its prompt (the batch would only repeat it).
    assert all(p == ctx.params.model_copy(update={"prompt": p.prompt, "batch_size": 1}) for p, _ in calls)
    assert [text for _, text in calls] == [f"Prompt matrix: picture {i} of 4" for i in range(1, 5)]
    assert len(result.images) == 5 and len(result.infotexts) == len(result.seeds) == len(result.paths) == 5
    assert [im.tobytes() for im in result.images[1:]] == [picture(p).tobytes() for p, _ in calls]
    assert result.infotexts[0] == result.infotexts[1] == grids[0][1]  # A1111: the first picture's
    assert result.paths[0] == Path("/grids/1.png") and result.seeds[0] == 7
    assert result.params.seed == 7 and not result.interrupted


def test_different_seeds_negative_prompt_and_a_random_seed():
    ctx, calls, _ = make_ctx(different_seeds=True, seed=MAX_SEED - 1)
    matrix.run(ctx)
    assert [p.seed for p, _ in calls] == [MAX_SEED - 1, MAX_SEED, 0, 1]  # wraps like any seed
    ctx, calls, _ = make_ctx("a cat", negative="blurry | dark", prompt_type="negative", seed=-1)
    matrix.run(ctx)
    assert [(p.prompt, p.negative_prompt) for p, _ in calls] == [
        ("a cat", "blurry"),
        ("a cat", "blurry, dark"),
    ]
    assert len({p.seed for p, _ in calls}) == 1 and calls[0][0].seed != -1
    ctx, _, _ = make_ctx(prompt_type="both")
    with pytest.raises(ValueError, match="positive or negative"):
        matrix.run(ctx)


def test_grid_layout_and_legend(monkeypatch):
    drawn = []

    def recording_legend(grid, cell_w, cell_h, columns, rows, margin=0):
        drawn.append((columns, rows, margin))
        return draw_legend(grid, cell_w, cell_h, columns, rows, margin)

    monkeypatch.setattr(sys.modules["engine.output.grid_legend"], "draw_legend", recording_legend)
    ctx, calls, _ = make_ctx("a cat | red | in a hat | at night", margin_size=4)
    result = matrix.run(ctx)
    columns, rows = prompt_matrix_headers(["red", "in a hat", "at night"])
    assert drawn == [(columns, rows, 4)]
    layout = layout_legend(CELL, CELL, columns, rows, 4)
    grid = result.images[0]
    assert grid.size == layout.size == (layout.pad_left + 4 * CELL + 3 * 4, layout.pad_top + 2 * CELL + 4)
    # picture 5 = parts 0 and 2 ("red", "at night"): column 1, row 1
    left, top = layout.pad_left + (CELL + 4), layout.pad_top + (CELL + 4)
    assert grid.crop((left, top, left + CELL, top + CELL)).tobytes() == picture(calls[5][0]).tobytes()
    assert calls[5][0].prompt == "a cat, red, at night"


def test_interruption_returns_the_pictures_made_and_a_grid_that_keeps_its_layout():
    ctx, calls, _ = make_ctx(interrupt_after=2)
    result = matrix.run(ctx)
    assert len(calls) == 2 and result.interrupted and len(result.images) == 3
    layout = layout_legend(CELL, CELL, *prompt_matrix_headers(["red", "in a hat"]))
    assert result.images[0].size == layout.size
    ctx, calls, grids = make_ctx()
    ctx.job.interrupt()
    result = matrix.run(ctx)
    assert calls == [] and grids == [] and result.images == [] and result.interrupted


def test_extension_loads_and_its_controls_build(tmp_path):
    import gradio as gr

    from engine.plugins.loader import ExtensionManager

    manager = ExtensionManager(roots=[Path("extensions")], state_file=tmp_path / "state.json")
    manager.load_all()
    assert manager.record("prompt_matrix").status == "loaded", manager.record("prompt_matrix").error
    script = manager.script("Prompt matrix")
    assert script.tabs == ("txt2img", "img2img")
    with gr.Blocks():
        built = script.ui()
    assert set(built) == {
        "put_at_start",
        "different_seeds",
        "prompt_type",
        "variations_delimiter",
        "margin_size",
    }
