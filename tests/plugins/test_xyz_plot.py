"""The X/Y/Z plot script: value parsing, every axis type, checks before generation, seeds, grids,
legend, result order, interruption and infotext — against a fake `ctx.process` (no model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from engine.output.grid_legend import draw_legend, layout_legend
from engine.pipeline.results import GenerationResult
from engine.plugins.scripts import EngineNames, ScriptContext
from engine.schema.infotext import build_infotext, parse_infotext
from engine.schema.params import GenerationParams, Img2ImgParams
from engine.service.jobs import Job
from extensions.xyz_plot import axes, plot, ui
from extensions.xyz_plot.plan import make_plan
from extensions.xyz_plot.values import parse_numbers, split_list

CELL = 64
NAMES = EngineNames(
    samplers=("Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC"),
    schedulers=("Automatic", "Uniform", "Karras", "Exponential"),
    checkpoints=("v1-5-pruned.safetensors [6ce0161689]", "sub/dreamshaper_8.safetensors [879db523c3]"),
    vaes=("Automatic", "None", "vae-ft-mse.safetensors"),
    hires_upscalers=("Latent", "Latent (nearest)", "R-ESRGAN 4x+"),
)


def picture(params, vae=None, index=0) -> Image.Image:
    """A deterministic picture of everything that decides a generation."""
    key = json.dumps([params.model_dump(mode="json"), vae, index], sort_keys=True).encode()
    colour = tuple(hashlib.sha256(key).digest()[:3])
    return Image.new("RGB", (params.width, params.height), colour)


class FakeEngine:
    """`ctx.process` stand-in: one picture per image of the job, with the real infotext writer."""

    def __init__(self, job: Job, interrupt_after: int | None = None):
        self.job, self.interrupt_after = job, interrupt_after
        self.calls: list[tuple] = []  # (params, vae, progress text at the call)
        self.grids: list[tuple[Image.Image, str]] = []

    def process(self, params, vae=None) -> GenerationResult:
        self.calls.append((params, vae, self.job.progress.textinfo))
        result = GenerationResult(params=params)
        for i in range(params.batch_size * params.n_iter):
            seed = params.seed + i
            result.images.append(picture(params, vae, i))
            result.infotexts.append(build_infotext(params, seed=seed, model_name="fake", model_hash="abc"))
            result.seeds.append(seed)
            result.paths.append(Path(f"/out/{len(self.calls)}-{i}.png"))
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            self.job.interrupt()
        return result

    def save_grid(self, image, infotext):
        self.grids.append((image, infotext))
        return Path(f"/grids/{len(self.grids)}.png")


def make_ctx(
    params=None, *, kind="txt2img", interrupt_after=None, **args
) -> tuple[ScriptContext, FakeEngine]:
    job = Job()
    engine = FakeEngine(job, interrupt_after)
    params = params or GenerationParams(prompt="a cat in a hat", width=CELL, height=CELL, steps=10, seed=100)
    ctx = ScriptContext(kind, params, args, job, engine.process, NAMES, engine.save_grid)
    return ctx, engine


def plan_of(params=None, **args):
    params = params or GenerationParams(prompt="a cat in a hat", width=CELL, height=CELL, seed=100)
    return make_plan(params, args, NAMES)


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-5 (+2)", [1, 3, 5]),
        ("1-10 [5]", [1, 3, 5, 7, 10]),  # A1111 truncates the evenly spread values
        ("10-1 (-3)", [10, 7, 4, 1]),
        ("5-1", [5, 4, 3, 2, 1]),
        ("-5--3", [-5, -4, -3]),
        (" 1 ,2, 4-6 , 10,", [1, 2, 4, 5, 6, 10]),
        ("-1, 7", [-1, 7]),
        ("3-3", [3]),
    ],
)
def test_int_values(text, expected):
    assert parse_numbers(text, int) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-1 (+0.25)", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("0-0.3 (+0.1)", [0.0, 0.1, 0.2, 0.3]),  # no float drift, end included
        ("1-2 [3]", [1.0, 1.5, 2.0]),
        ("1.5-0.5 (-0.5)", [1.5, 1.0, 0.5]),
        ("7, 7.5, 8", [7.0, 7.5, 8.0]),
        ("2-4", [2.0, 3.0, 4.0]),
    ],
)
def test_float_values(text, expected):
    assert parse_numbers(text, float) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("1-5 (+0)", int, "must not be 0"),
        ("1-5 (-1)", int, "never gets from 1 to 5"),
        ("abc", int, "cannot read 'abc'"),
        ("1.5", int, "not a whole number"),
        ("1-5 [0]", int, "at least 1"),
        ("1-1000000", int, "at most"),
        ("x-y", float, "cannot read 'x-y'"),
        ("nan", float, "finite"),
    ],
)
def test_bad_values_are_value_errors(text, kind, message):
    with pytest.raises(ValueError, match=message):
        parse_numbers(text, kind)


def test_lists_use_csv_quoting_and_trim_spaces():
    assert split_list(' Euler a ,"DPM++ 2M, Karras",  DDIM ,') == ["Euler a", "DPM++ 2M, Karras", "DDIM"]


# -- axis types -----------------------------------------------------------------------------------
NUMERIC_AXES = [
    ("Seed", "5", {"seed": 5}),
    ("Steps", "12", {"steps": 12}),
    ("Hires steps", "7", {"hr_second_pass_steps": 7}),
    ("CFG Scale", "4.5", {"cfg_scale": 4.5}),
    ("Denoising", "0.3", {"denoising_strength": 0.3}),
    ("Eta", "0.4", {"eta_ancestral": 0.4, "eta_ddim": 0.4}),
    ("Sigma churn", "0.5", {"s_churn": 0.5}),
    ("Sigma min", "0.2", {"s_tmin": 0.2}),
    ("Sigma max", "8", {"s_tmax": 8.0}),
    ("Sigma noise", "1.05", {"s_noise": 1.05}),
    ("Schedule rho", "5", {"rho": 5.0}),
    ("Clip skip", "2", {"CLIP_stop_at_last_layers": 2}),
    ("UniPC order", "2", {"uni_pc_order": 2}),
    ("Shift", "4.5", {"shift": 4.5}),
    ("Distilled CFG Scale", "2.5", {"distilled_cfg_scale": 2.5}),
    ("Size", "128x96", {"width": 128, "height": 96}),
    ("Prompt S/R", "cat, dog", {"prompt": "a cat in a hat"}),  # first value: the search itself
    ("Sampler", "DPM++ 2M", {"sampler_name": "DPM++ 2M"}),
    ("Hires sampler", "Euler", {"hr_sampler_name": "Euler"}),
    ("Schedule type", "karras", {"scheduler": "Karras"}),
    ("Checkpoint name", "dreamshaper_8", {"checkpoint": "sub/dreamshaper_8.safetensors [879db523c3]"}),
    ("Hires upscaler", "r-esrgan 4x+", {"hr_upscaler": "R-ESRGAN 4x+"}),
]


@pytest.mark.parametrize(("label", "text", "fields"), NUMERIC_AXES)
def test_each_axis_sets_its_fields_like_a_user_would(label, text, fields):
    base = GenerationParams(prompt="a cat in a hat", width=CELL, height=CELL, seed=100)
    plan = make_plan(base, {"x_type": label, "x_values": text}, NAMES)
    first = plan.cells[0].params
    assert first == GenerationParams.model_validate({**base.model_dump(), **fields})
    assert plan.cells[0].vae is None


def test_variation_seed_axes_set_subseed_and_strength():
    plan = plan_of(x_type="Var. seed", x_values="7, 8", y_type="Var. strength", y_values="0.1, 0.5")
    assert [(c.params.subseed, c.params.subseed_strength) for c in plan.cells] == [
        (7, 0.1),
        (8, 0.1),
        (7, 0.5),
        (8, 0.5),
    ]


def test_a_minus_one_variation_seed_is_fixed_only_when_some_cell_uses_it():
    plan = plan_of(x_type="Var. strength", x_values="0, 0.5")
    assert len({c.params.subseed for c in plan.cells}) == 1 and plan.cells[0].params.subseed != -1
    assert {c.params.subseed for c in plan_of(x_type="Steps", x_values="2, 3").cells} == {-1}


def test_an_axis_names_a_parameter_its_params_lack():
    class Bare(BaseModel):  # e.g. an older parameter model without some field
        model_config = ConfigDict(frozen=True)
        seed: int = 1

    with pytest.raises(ValueError, match=r"X axis \(Steps\) needs the parameter 'steps'"):
        make_plan(Bare(), {"x_type": "Steps", "x_values": "3"}, NAMES)


def test_vae_axis_rides_beside_the_params():
    plan = plan_of(x_type="VAE", x_values_dropdown=["None", "vae-ft-mse.safetensors"])
    assert [c.vae for c in plan.cells] == ["None", "vae-ft-mse.safetensors"]
    assert plan.cells[0].params == plan.cells[1].params


def test_prompt_search_replace_and_order():
    plan = plan_of(
        params=GenerationParams(prompt="a cat in a hat", negative_prompt="cat ears", width=CELL, height=CELL),
        x_type="Prompt S/R",
        x_values="cat, dog, fox",
    )
    assert [(c.params.prompt, c.params.negative_prompt) for c in plan.cells] == [
        ("a cat in a hat", "cat ears"),
        ("a dog in a hat", "dog ears"),
        ("a fox in a hat", "fox ears"),
    ]
    plan = plan_of(
        params=GenerationParams(prompt="red, cat, big, hat", width=CELL, height=CELL),
        x_type="Prompt order",
        x_values="red, big, hat",
    )
    prompts = [c.params.prompt for c in plan.cells]
    assert len(prompts) == 6 and prompts[0] == "red, cat, big, hat"
    assert "big, cat, red, hat" in prompts and "hat, cat, big, red" in prompts
    assert plan.x.labels[1] == "red, hat, big"


def test_legacy_sampler_name_is_split_as_the_tab_would():
    plan = plan_of(x_type="Sampler", x_values="DPM++ 2M Karras")
    assert (plan.cells[0].params.sampler_name, plan.cells[0].params.scheduler) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"x_type": "Sampler", "x_values": "Euler a, Nope"},
            r"X/Y/Z plot: X axis \(Sampler\): unknown sampler 'Nope'",
        ),
        (
            {"y_type": "Checkpoint name", "y_values": "missing.ckpt"},
            r"Y axis \(Checkpoint name\).*'missing.ckpt'",
        ),
        ({"z_type": "VAE", "z_values": "nothing.pt"}, r"Z axis \(VAE\): unknown vae 'nothing.pt'"),
        ({"x_type": "Schedule type", "x_values": "Wobbly"}, "unknown schedule type 'Wobbly'"),
        ({"x_type": "Hires upscaler", "x_values": "ESRGAN 9x"}, "unknown hires upscaler"),
        ({"x_type": "Steps", "x_values": "5, 0"}, r"X axis, Steps: 0: steps: Input should be greater"),
        ({"x_type": "Steps", "x_values": "1-3 (+0)"}, "step must not be 0"),
        ({"x_type": "Steps", "x_values": ""}, "no values given"),
        ({"x_type": "Size", "x_values": "512 by 512"}, "WIDTHxHEIGHT"),
        ({"x_type": "Size", "x_values": "500x512"}, "multiple of 8"),
        ({"x_type": "Prompt S/R", "x_values": "horse, dog"}, "'horse' is not in the prompt"),
        ({"x_type": "Prompt order", "x_values": "cat, horse"}, "'horse' is not in the prompt"),
        ({"x_type": "Wobble"}, "unknown axis type 'Wobble'"),
    ],
)
def test_bad_axis_values_fail_before_any_generation(args, message):
    ctx, engine = make_ctx(**args)
    with pytest.raises(ValueError, match=message):
        plot.run(ctx)
    assert engine.calls == []


def test_axis_type_may_be_an_index_as_a1111_api_sends():
    plan = plan_of(x_type=axes.AXIS_LABELS.index("Steps"), x_values="3, 4")
    assert [c.params.steps for c in plan.cells] == [3, 4]


# -- seeds ----------------------------------------------------------------------------------------
def test_minus_one_seed_is_resolved_once_for_every_cell():
    plan = plan_of(params=GenerationParams(width=CELL, height=CELL, seed=-1), x_type="Steps", x_values="2-4")
    seeds = {c.params.seed for c in plan.cells}
    assert len(seeds) == 1 and -1 not in seeds
    kept = plan_of(
        params=GenerationParams(width=CELL, height=CELL, seed=-1),
        x_type="Steps",
        x_values="2-4",
        no_fixed_seeds=True,
    )
    assert {c.params.seed for c in kept.cells} == {-1}


def test_seed_axis_minus_one_values_become_fixed_unless_kept():
    plan = plan_of(x_type="Seed", x_values="-1, 5, -1")
    seeds = [c.params.seed for c in plan.cells]
    assert seeds[1] == 5 and -1 not in seeds
    assert plan_of(x_type="Seed", x_values="-1, 5", no_fixed_seeds=True).x.values == [-1, 5]


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ({}, [[100] * 3] * 2),
        ({"vary_seeds_x": True}, [[100, 101, 102], [100, 101, 102]]),
        ({"vary_seeds_y": True}, [[100, 100, 100], [101, 101, 101]]),  # xdim is 1 when X does not vary
        ({"vary_seeds_x": True, "vary_seeds_y": True}, [[100, 101, 102], [103, 104, 105]]),
    ],
)
def test_vary_seeds_offsets_as_a1111(vary, expected):
    plan = plan_of(x_type="Steps", x_values="2-4", y_type="CFG Scale", y_values="5, 6", **vary)
    assert [[c.params.seed for c in plan.cells[row * 3 : row * 3 + 3]] for row in range(2)] == expected


def test_vary_seeds_for_z_multiplies_the_varied_dims():
    plan = plan_of(
        x_type="Steps",
        x_values="2, 3",
        y_type="CFG Scale",
        y_values="5, 6, 7",
        z_type="Eta",
        z_values="0, 1",
        vary_seeds_x=True,
        vary_seeds_y=True,
        vary_seeds_z=True,
    )
    assert [c.params.seed for c in plan.cells] == list(range(100, 112))
    only_z = plan_of(x_type="Steps", x_values="2, 3", z_type="Eta", z_values="0, 1", vary_seeds_z=True)
    assert [c.params.seed for c in only_z.cells] == [100, 100, 101, 101]


# -- running --------------------------------------------------------------------------------------
def test_every_cell_is_one_plain_process_call_and_the_grid_has_the_legend(monkeypatch):
    drawn = []

    def recording_legend(grid, cell_w, cell_h, columns, rows, margin=0):
        drawn.append((list(columns), list(rows), margin))
        return draw_legend(grid, cell_w, cell_h, columns, rows, margin)

    monkeypatch.setattr(plot, "draw_legend", recording_legend)
    ctx, engine = make_ctx(
        x_type="Steps", x_values="2-4", y_type="Sampler", y_values_dropdown=["Euler", "DDIM"]
    )
    result = plot.run(ctx)
    assert len(engine.calls) == 6 and len(result.images) == 1
    for params, vae, _ in engine.calls:
        # The same parameters a user would type into the tab, nothing else.
        assert params == ctx.params.model_copy(
            update={"steps": params.steps, "sampler_name": params.sampler_name}
        )
        assert vae is None
    assert drawn == [(["Steps: 2", "Steps: 3", "Steps: 4"], ["Euler", "DDIM"], 0)]
    layout = layout_legend(CELL, CELL, *drawn[0][:2])
    grid = result.images[0]
    assert grid.size == layout.size and layout.pad_top > 0 and layout.pad_left > 0
    assert grid.size == (layout.pad_left + 3 * CELL, layout.pad_top + 2 * CELL)
    # the cells sit where the legend leaves them: (x, y) = (1, 1) is steps 3 with DDIM
    left, top = layout.pad_left + CELL, layout.pad_top + CELL
    cell = grid.crop((left, top, left + CELL, top + CELL))
    assert (
        cell.tobytes()
        == picture(ctx.params.model_copy(update={"steps": 3, "sampler_name": "DDIM"})).tobytes()
    )


def test_grid_without_legend_is_cells_only_and_margins_spread_them():
    ctx, _ = make_ctx(
        x_type="Steps", x_values="2, 3", y_type="CFG Scale", y_values="5, 6, 7", draw_legend=False
    )
    assert plot.run(ctx).images[0].size == (2 * CELL, 3 * CELL)
    ctx, _ = make_ctx(
        x_type="Steps",
        x_values="2, 3",
        y_type="CFG Scale",
        y_values="5, 6, 7",
        draw_legend=False,
        margin_size=10,
    )
    assert plot.run(ctx).images[0].size == (2 * CELL + 10, 3 * CELL + 20)
    ctx, _ = make_ctx(x_type="Steps", x_values="2, 3", margin_size=-1)
    with pytest.raises(ValueError, match="margins"):
        plot.run(ctx)


def test_result_order_full_grid_sub_grids_then_cells():
    ctx, engine = make_ctx(
        x_type="Steps",
        x_values="2, 3",
        y_type="CFG Scale",
        y_values="5, 6",
        z_type="Seed",
        z_values="1, 2, 3",
        include_sub_grids=True,
        include_lone_images=True,
        draw_legend=False,
    )
    result = plot.run(ctx)
    assert len(result.images) == 1 + 3 + 12
    assert result.images[0].size == (3 * 2 * CELL, 2 * CELL)  # sub-grids side by side
    assert [im.size for im in result.images[1:4]] == [(2 * CELL, 2 * CELL)] * 3
    assert result.seeds[:4] == [1, 1, 2, 3]  # the grids carry their first cell's seed
    cells = result.images[4:]
    by_grid = sorted(engine.calls, key=lambda c: (c[0].seed, c[0].cfg_scale, c[0].steps))
    assert [im.tobytes() for im in cells] == [picture(p).tobytes() for p, _, _ in by_grid]
    assert [s for s in result.seeds[4:]] == [p.seed for p, _, _ in by_grid]
    assert result.paths[:4] == [Path(f"/grids/{i}.png") for i in range(1, 5)]  # full + sub-grids saved
    assert len(result.images) == len(result.infotexts) == len(result.seeds) == len(result.paths)


def test_z_legend_and_sub_grid_of_one_z_value_is_not_repeated():
    ctx, _ = make_ctx(x_type="Steps", x_values="2, 3", z_type="CFG Scale", z_values="5, 6")
    full = plot.run(ctx).images[0]
    assert full.height > CELL and full.width == 2 * (2 * CELL)  # Z labels on top, no row labels
    ctx, _ = make_ctx(x_type="Steps", x_values="2, 3", include_sub_grids=True)
    assert len(plot.run(ctx).images) == 1


def test_a_batch_makes_each_cell_a_small_grid():
    params = GenerationParams(prompt="cat", width=CELL, height=CELL, seed=100, batch_size=2, n_iter=2)
    ctx, _ = make_ctx(params, x_type="Steps", x_values="2, 3", draw_legend=False, include_lone_images=True)
    result = plot.run(ctx)
    assert result.images[0].size == (2 * 2 * CELL, 2 * CELL)
    assert len(result.images) == 1 + 8


def test_costly_axes_are_iterated_outermost():
    ctx, engine = make_ctx(
        x_type="Checkpoint name", x_values="v1-5-pruned, dreamshaper_8", y_type="Steps", y_values="2, 3"
    )
    plot.run(ctx)
    assert [p.checkpoint[:4] for p, _, _ in engine.calls] == ["v1-5", "v1-5", "sub/", "sub/"]
    ctx, engine = make_ctx(x_type="Steps", x_values="2, 3", y_type="VAE", y_values="None, Automatic")
    plot.run(ctx)
    assert [v for _, v, _ in engine.calls] == ["None", "None", "Automatic", "Automatic"]


def test_progress_text_names_the_cell():
    ctx, engine = make_ctx(x_type="Steps", x_values="2-4")
    plot.run(ctx)
    assert [text for _, _, text in engine.calls] == [f"X/Y/Z plot: cell {i} of 3" for i in (1, 2, 3)]


def test_interruption_stops_between_cells_and_returns_what_exists():
    ctx, engine = make_ctx(
        x_type="Steps", x_values="2-5", interrupt_after=2, include_lone_images=True, draw_legend=False
    )
    result = plot.run(ctx)
    assert len(engine.calls) == 2 and result.interrupted
    assert result.images[0].size == (4 * CELL, CELL)  # the grid keeps its layout, missing cells black
    assert result.images[0].getpixel((3 * CELL, 0)) == (0, 0, 0)
    assert len(result.images) == 1 + 2
    ctx, engine = make_ctx(x_type="Steps", x_values="2-5")
    ctx.job.interrupt()
    result = plot.run(ctx)
    assert engine.calls == [] and result.interrupted and result.images == []


def test_grid_infotext_is_the_first_cells_plus_the_script_keys():
    ctx, engine = make_ctx(
        x_type="Sampler",
        x_values_dropdown=["Euler", "DPM++ 2M"],
        y_type="Seed",
        y_values="-1, 3",
    )
    result = plot.run(ctx)
    first_cell = build_infotext(
        engine.calls[0][0], seed=engine.calls[0][0].seed, model_name="fake", model_hash="abc"
    )
    info = parse_infotext(result.infotexts[0])
    assert info["Script"] == "X/Y/Z plot"
    assert (info["X Type"], info["X Values"]) == ("Sampler", "Euler, DPM++ 2M")
    assert (info["Y Type"], info["Y Values"]) == ("Seed", "-1, 3")
    fixed = [int(s) for s in info["Fixed Y Values"].split(", ")]
    assert fixed[1] == 3 and fixed[0] != -1
    assert "Z Type" not in info
    assert result.infotexts[0].endswith(f"Version: {parse_infotext(first_cell)['Version']}")
    without_script = {
        k: v for k, v in info.items() if "Type" not in k and "Values" not in k and k != "Script"
    }
    assert without_script == parse_infotext(first_cell)
    assert engine.grids[0][1] == result.infotexts[0]  # saved with the same text


def test_insert_params_without_a_version_appends():
    assert plot.insert_params("cat\nSteps: 2, Seed: 1", "Script: X") == "cat\nSteps: 2, Seed: 1, Script: X"


def test_hires_axes_say_when_they_do_nothing():
    ctx, _ = make_ctx(x_type="Hires steps", x_values="1, 2")
    assert any("Hires steps axis changes nothing" in n for n in plot.run(ctx).notes)
    params = GenerationParams(prompt="cat", width=CELL, height=CELL, enable_hr=True)
    ctx, _ = make_ctx(params, x_type="Hires steps", x_values="1, 2")
    assert not plot.run(ctx).notes


def test_img2img_params_keep_their_type():
    params = Img2ImgParams(prompt="cat", width=CELL, height=CELL, seed=3, denoising_strength=0.6)
    ctx, engine = make_ctx(params, kind="img2img", x_type="Denoising", x_values="0.2, 0.4")
    plot.run(ctx)
    assert [type(p) for p, _, _ in engine.calls] == [Img2ImgParams] * 2
    assert [p.denoising_strength for p, _, _ in engine.calls] == [0.2, 0.4]


# -- UI and loading -------------------------------------------------------------------------------
def test_extension_loads_and_its_controls_build(tmp_path):
    import gradio as gr

    from engine.plugins.loader import ExtensionManager

    manager = ExtensionManager(roots=[Path("extensions")], state_file=tmp_path / "state.json")
    manager.load_all()
    assert manager.record("xyz_plot").status == "loaded", manager.record("xyz_plot").error
    script = manager.script("X/Y/Z plot")
    assert script.tabs == ("txt2img", "img2img")
    with gr.Blocks():
        built = script.ui()
    for key in ("x_type", "x_values", "x_values_dropdown", "z_type", "margin_size", "include_sub_grids"):
        assert key in built
    assert list(script.args.model_fields)[:3] == ["x_type", "x_values", "x_values_dropdown"]
    assert set(built) <= set(script.args.model_fields)  # every control is a declared argument


def test_dropdown_choices_come_from_the_names_provider():
    names = lambda: NAMES  # noqa: E731  (what the engine's names provider returns)
    text, picks, fill = ui.axis_controls(
        "Checkpoint name", ["v1-5-pruned.safetensors [6ce0161689]", "gone"], names
    )
    assert picks["choices"] == list(NAMES.checkpoints) and picks["visible"] and fill["visible"]
    assert picks["value"] == ["v1-5-pruned.safetensors [6ce0161689]"]  # picks no longer offered go
    assert text["visible"] is False
    text, picks, fill = ui.axis_controls("Steps", names=names)
    assert text["visible"] and not picks["visible"] and not fill["visible"]
    assert ui.fill_all("VAE", names)["value"] == list(NAMES.vaes)
    swapped = ui.swap("Steps", "1-3", [], "Sampler", "", ["Euler"], names=names)
    assert swapped[0]["value"] == "Sampler" and swapped[2]["value"] == ["Euler"]
    assert swapped[4]["value"] == "Steps" and swapped[5]["value"] == "1-3" and swapped[5]["visible"]
    fallback = ui.current_names()  # before the engine provides names: the registry's samplers
    assert "Euler a" in fallback.samplers and fallback.checkpoints == ()


def test_legend_labels_per_axis_kind():
    assert plan_of(x_type="CFG Scale", x_values="7, 7.5").x.labels == ["CFG Scale: 7", "CFG Scale: 7.5"]
    assert plan_of(x_type="Checkpoint name", x_values="dreamshaper_8").x.labels == [
        "dreamshaper_8.safetensors"
    ]
    assert plan_of(x_type="Size", x_values="64x128").x.labels == ["Size: 64x128"]
    assert plan_of(x_type="VAE", x_values="None").x.labels == ["VAE: None"]
    assert plan_of(x_type="Steps", x_values="3").y.labels == [""]  # Nothing: no text, no legend band


def test_the_arguments_take_what_the_page_sends_for_hidden_boxes():
    """An axis set to Nothing hides its values box, and the page then sends None for it."""
    from engine.plugins.args import arg_values
    from extensions.xyz_plot.args import XYZArgs

    values = arg_values(
        XYZArgs, {"x_type": "Steps", "x_values": "2, 3", "z_values": None, "z_values_dropdown": None}
    )
    assert plan_of(**values).x.values == [2, 3]
    assert list(XYZArgs.model_fields)[9:12] == ["draw_legend", "include_lone_images", "include_sub_grids"]
