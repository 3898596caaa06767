"""Extension hooks in the pipelines, on tiny seeded components: a recording extension (a real
extension folder, loaded by the loader) sees every stage in order with valid contexts for txt2img,
img2img, inpainting and hires fix; a raising hook is reported and the picture still made; an
AFTER_CFG hook changes the output and writes its infotext entry; no hooks = bit-identical."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.models.loaders import load_checkpoint
from engine.models.registry import scan_folder
from engine.pipeline import img2img as i2i
from engine.pipeline.stages import SaveOptions
from engine.pipeline.txt2img import txt2img
from engine.plugins.hooks import Stage
from engine.plugins.loader import ExtensionManager
from engine.schema.infotext import parse_infotext
from engine.schema.params import GenerationParams, Img2ImgParams
from engine.service.jobs import Job
from tests.fakes.extensions import extension_module, write_extension

ROOT = Path(__file__).resolve().parents[2]
GENERATION_STAGES = [
    s for s in Stage if s.value not in {"app_started", "model_loaded", "ui_tabs", "settings_changed"}
]

RECORDER = textwrap.dedent(
    """
    from engine.plugins.hooks import (DecodeContext, GenerationContext, ImageContext, PromptContext,
                              SamplingContext, Stage, StepContext)

    EXPECTED = {
        Stage.PARAMS_RESOLVED: GenerationContext, Stage.BEFORE_ENCODE: PromptContext,
        Stage.AFTER_ENCODE: PromptContext, Stage.BEFORE_SAMPLING: SamplingContext,
        Stage.BEFORE_MODEL_CALL: StepContext, Stage.AFTER_CFG: StepContext, Stage.STEP_END: StepContext,
        Stage.AFTER_SAMPLING: SamplingContext, Stage.AFTER_DECODE: DecodeContext,
        Stage.POSTPROCESS_IMAGE: ImageContext, Stage.BEFORE_SAVE: ImageContext,
        Stage.AFTER_SAVE: ImageContext,
    }
    LOG = []

    def setup(ext):
        for stage, kind in EXPECTED.items():
            def record(ctx, stage=stage, kind=kind):
                assert isinstance(ctx, kind), (stage, type(ctx))
                gen = ctx if isinstance(ctx, GenerationContext) else ctx.gen
                LOG.append((stage, gen.kind, gen.pass_name, ctx, dict(gen.args)))
            ext.on(stage, record)
    """
)

BROKEN_HOOK = textwrap.dedent(
    """
    def setup(ext):
        def explode(ctx):
            raise RuntimeError("boom")
        ext.on("after_cfg", explode)
        ext.on("postprocess_image", explode)
    """
)


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    (info,) = [i for i in scan_folder(tiny_diffusers_dir.parent) if i.path == tiny_diffusers_dir]
    return load_checkpoint(info, "cpu", torch.float32, torch.float32)


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    root = tmp_path_factory.mktemp("extensions")
    write_extension(root, "recorder", RECORDER)
    write_extension(root, "broken-hook", BROKEN_HOOK)
    manager = ExtensionManager([root, ROOT / "extensions"], root / "state.json")
    manager.load_all()
    assert {r.name: r.status for r in manager.records}["recorder"] == "loaded"
    return manager


@pytest.fixture()
def log(manager):

    entries = extension_module("recorder").LOG
    entries.clear()
    return entries


def job_with(manager, args=None, only=("recorder",)) -> Job:
    job = Job()
    manager.registry.disabled = {r.name for r in manager.records if r.name not in only}
    job.hooks = manager.registry.runner(args or {})
    return job


def params(**kw) -> GenerationParams:
    base = dict(
        prompt="a red circle", steps=3, sampler_name="Euler", seed=3, width=64, height=64, cfg_scale=5
    )
    return GenerationParams(**{**base, **kw})


def stages(log, pass_name=None) -> list[Stage]:
    """The stage sequence with consecutive repeats (steps) folded."""
    out = []
    for stage, _kind, passed, _ctx, _args in log:
        if pass_name is not None and passed != pass_name:
            continue
        if not out or out[-1] != stage:
            out.append(stage)
    return out


ONE_PASS = [
    Stage.BEFORE_SAMPLING,
    Stage.BEFORE_MODEL_CALL,
    Stage.AFTER_CFG,
    Stage.STEP_END,
    Stage.BEFORE_MODEL_CALL,
    Stage.AFTER_CFG,
    Stage.STEP_END,
    Stage.BEFORE_MODEL_CALL,
    Stage.AFTER_CFG,
    Stage.STEP_END,
    Stage.AFTER_SAMPLING,
]
PICTURE = [Stage.POSTPROCESS_IMAGE, Stage.BEFORE_SAVE, Stage.AFTER_SAVE]


def test_txt2img_fires_every_stage_in_order_with_valid_contexts(model, manager, log, tmp_path):
    job = job_with(manager, {"recorder": {"strength": 0.5}})
    result = txt2img(model, params(), job=job, save=SaveOptions(tmp_path))
    first = [Stage.PARAMS_RESOLVED, Stage.BEFORE_ENCODE, Stage.AFTER_ENCODE]
    assert stages(log) == [*first, *ONE_PASS, Stage.AFTER_DECODE, *PICTURE]
    by_stage = {}
    for stage, kind, _pass, ctx, args in log:
        by_stage.setdefault(stage, []).append(ctx)
        assert kind == "txt2img" and args == {"strength": 0.5}  # each extension sees its own values
    assert by_stage[Stage.PARAMS_RESOLVED][0].params.seed == 3
    assert by_stage[Stage.AFTER_ENCODE][0].conditioning is not None
    assert by_stage[Stage.BEFORE_SAMPLING][0].latents.shape == (1, 4, 8, 8)
    assert by_stage[Stage.BEFORE_SAMPLING][0].seeds == [3]
    assert [c.step for c in by_stage[Stage.STEP_END]] == [0, 1, 2]
    cfg = by_stage[Stage.AFTER_CFG][0]
    assert cfg.uncond is not None and cfg.cond.shape == cfg.denoised.shape == (1, 4, 8, 8)
    assert by_stage[Stage.AFTER_DECODE][0].images.shape == (1, 3, 64, 64)
    saved = by_stage[Stage.AFTER_SAVE][0]
    assert saved.path == result.paths[0] and saved.path.is_file() and "Seed: 3" in saved.infotext


def test_hires_fix_runs_a_second_pass_of_stages(model, manager, log):
    job = job_with(manager)
    txt2img(model, params(enable_hr=True, hr_second_pass_steps=2, denoising_strength=1.0), job=job)
    assert stages(log, "hires")[:2] == [Stage.BEFORE_ENCODE, Stage.AFTER_ENCODE]
    hires_sampling = [s for s in stages(log, "hires") if s not in (Stage.BEFORE_ENCODE, Stage.AFTER_ENCODE)]
    assert hires_sampling[0] == Stage.BEFORE_SAMPLING and hires_sampling[-1] == Stage.AFTER_SAMPLING
    sizes = [ctx.latents.shape[-1] for s, _, p, ctx, _ in log if s == Stage.BEFORE_SAMPLING]
    assert sizes == [8, 16]  # the first pass, then the hires pass at twice the size
    assert stages(log)[-4:] == [Stage.AFTER_DECODE, *PICTURE]


@pytest.mark.parametrize("masked", [False, True])
def test_img2img_and_inpainting_fire_the_same_stages(model, manager, log, masked):
    picture = Image.new("RGB", (64, 64), "blue")
    mask = None
    if masked:
        mask = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    p = Img2ImgParams(**params().model_dump(exclude={"denoising_strength"}), denoising_strength=0.75)
    job = job_with(manager)
    i2i.img2img(model, p, i2i.Img2ImgInputs([picture], mask), job=job)
    assert stages(log)[:3] == [Stage.PARAMS_RESOLVED, Stage.BEFORE_ENCODE, Stage.AFTER_ENCODE]
    assert stages(log)[3] == Stage.BEFORE_SAMPLING and Stage.AFTER_SAMPLING in stages(log)
    assert stages(log)[-4:] == [Stage.AFTER_DECODE, *PICTURE]
    assert {kind for _, kind, *_ in log} == {"inpaint" if masked else "img2img"}


def test_a_raising_hook_is_reported_and_the_picture_still_made(model, manager, log):
    job = job_with(manager, only=("recorder", "broken-hook"))
    result = txt2img(model, params(), job=job)
    assert len(result.images) == 1
    assert any("broken-hook failed in after_cfg: RuntimeError: boom" in n for n in result.notes)
    assert any("postprocess_image" in n for n in result.notes)
    assert any(e.extension == "broken-hook" for e in manager.registry.errors)
    assert Stage.AFTER_SAVE in stages(log)  # the other extension's hooks kept running


def test_cfg_rescale_changes_the_picture_and_writes_its_infotext(model, manager):
    plain = txt2img(model, params(cfg_scale=12), job=job_with(manager, only=()))
    off = txt2img(
        model,
        params(cfg_scale=12),
        job=job_with(manager, {"cfg-rescale": {"enabled": False}}, only=("cfg-rescale",)),
    )
    on = txt2img(
        model,
        params(cfg_scale=12),
        job=job_with(manager, {"cfg-rescale": {"enabled": True, "multiplier": 0.7}}, only=("cfg-rescale",)),
    )
    a, b, c = (np.asarray(r.images[0], dtype=np.int16) for r in (plain, off, on))
    assert np.array_equal(a, b)  # installed but off: bit-identical
    assert np.abs(c - a).mean() > 0.05  # the tiny model barely reads prompts: small, but changed
    assert parse_infotext(on.infotexts[0])["CFG Rescale"] == "0.7"
    assert "CFG Rescale" not in plain.infotexts[0]


def test_cfg_rescale_matches_its_formula(manager):

    rescale = extension_module("cfg-rescale").rescale
    torch.manual_seed(0)
    cond = torch.randn(2, 4, 8, 8)
    guided = cond * 3 + 0.1
    out = rescale(guided, cond, 1.0)
    assert torch.allclose(out.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)), atol=1e-5)
    assert torch.equal(rescale(guided, cond, 0.0), guided)


def test_no_extensions_is_bit_identical_to_a_job_without_hooks(model, manager):
    bare = txt2img(model, params(), job=Job())
    hooked = txt2img(model, params(), job=job_with(manager, only=()))
    assert np.array_equal(np.asarray(bare.images[0]), np.asarray(hooked.images[0]))


def test_params_resolved_may_change_the_job(model, tmp_path):
    root = tmp_path / "ext"
    write_extension(
        root,
        "steps-changer",
        "def setup(ext):\n"
        "    def change(gen):\n"
        "        gen.params = gen.params.model_copy(update={'steps': 2})\n"
        "        gen.extra_infotext['Changed'] = 'yes'\n"
        "    ext.on('params_resolved', change)\n",
    )
    manager = ExtensionManager([root], root / "state.json")
    manager.load_all()
    job = Job()
    job.hooks = manager.registry.runner()
    result = txt2img(model, params(steps=5), job=job)
    info = parse_infotext(result.infotexts[0])
    assert info["Steps"] == "2" and info["Changed"] == "yes" and job.progress.job_steps == 2
