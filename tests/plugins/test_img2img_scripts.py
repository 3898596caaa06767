"""SD upscale and Outpainting are extensions that take an img2img job over like any script, through
the engine's one submit path: every extension hook fires for the generations they run (and for SD
upscale's stitched picture), their arguments are declared once as pydantic models that check the
UI's and the API's values alike, and img2img batch folders fire the hooks for every picture too."""

from __future__ import annotations

import math
import textwrap
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from engine.pipeline.img2img import Img2ImgInputs
from engine.plugins.args import ArgsError, arg_values
from engine.plugins.script_jobs import ScriptCall
from engine.schema.infotext import parse_infotext
from engine.schema.params import Img2ImgParams
from extensions.outpainting.main import OutpaintingArgs
from extensions.sd_upscale.main import SDUpscaleArgs
from extensions.sd_upscale.tiles import tile_boxes
from tests.fakes.extensions import engine_with_extension, extension_module

RECORDER = textwrap.dedent(
    """
    LOG = []

    def setup(ext):
        for stage in ("params_resolved", "before_sampling", "postprocess_image", "after_save"):
            ext.on(stage, lambda ctx, stage=stage: LOG.append((stage, getattr(ctx, "path", None))))
    """
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return engine_with_extension(tmp_path_factory.mktemp("scripts"), "script-recorder", RECORDER)


@pytest.fixture()
def log():
    entries = extension_module("script-recorder").LOG
    entries.clear()
    return entries


def params(**kw) -> Img2ImgParams:
    base = dict(prompt="a red circle", steps=3, sampler_name="Euler", seed=2, width=64, height=64)
    return Img2ImgParams(**{**base, "denoising_strength": 0.3, **kw})


def gradient(size=(80, 64)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w)
    array = np.stack(
        [np.tile(x, (h, 1)), np.tile(np.linspace(0, 255, h)[:, None], (1, w)), np.full((h, w), 120)], -1
    )
    return Image.fromarray(array.astype(np.uint8))


def run(engine, call: ScriptCall, p: Img2ImgParams, picture: Image.Image):
    job = engine.submit_img2img(p, Img2ImgInputs([picture]), script=call)
    job.wait()
    if job.error is not None:
        raise job.error
    return job.result


def test_tiles_cover_the_picture_with_overlap():
    boxes = tile_boxes(160, 128, 64, 64, 16)
    assert boxes[0] == (0, 0, 64, 64) and boxes[-1] == (96, 64, 160, 128)
    covered = np.zeros((128, 160), int)
    for x1, y1, x2, y2 in boxes:
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_sd_upscale_doubles_the_picture_and_every_hook_fires(engine, log):
    call = ScriptCall("SD upscale", {"scale_factor": 2.0, "upscaler_index": "Lanczos", "overlap": 16})
    result = run(engine, call, params(), gradient())
    (picture,) = result.images
    assert picture.size == (160, 128)
    info = parse_infotext(result.infotexts[0])
    assert info["SD upscale upscaler"] == "Lanczos" and info["SD upscale overlap"] == "16"
    assert info["Size"] == "160x128" and info["Seed"] == "2"
    tiles = len(tile_boxes(160, 128, 64, 64, 16))
    stages = Counter(stage for stage, _ in log)
    assert stages["params_resolved"] == stages["before_sampling"] == tiles  # each tile: one img2img
    assert stages["postprocess_image"] == tiles + 1  # and the stitched picture, like any picture
    saved = [path for stage, path in log if stage == "after_save" and path is not None]
    assert saved == [result.paths[0]] and "img2img-images" in result.paths[0].parts  # tiles unsaved


def test_outpainting_extends_the_picture_and_keeps_it(engine, log):
    source = gradient((64, 48))
    call = ScriptCall("Outpainting", {"pixels": 16, "direction": ["left"], "mask_blur": 4})
    result = run(engine, call, params(denoising_strength=0.9), source)
    out = np.asarray(result.images[0])
    assert out.shape == (48, 80, 3)
    # Far from the seam (mask blur 4 px in, its blur kernel beyond) the original is untouched.
    assert np.array_equal(out[:, 48:], np.asarray(source)[:, 32:])
    assert [stage for stage, _ in log].count("params_resolved") == 1
    assert parse_infotext(result.infotexts[0])["Mask blur"] == "4"


def test_outpainting_answers_to_a1111s_title_and_positional_args(engine):
    call = ScriptCall("Poor man's outpainting", arg_values(OutpaintingArgs, [8, 4, 0, ["up", "down"]]))
    result = run(engine, call, params(), gradient((64, 48)))
    assert result.images[0].size == (64, 64)


def test_img2img_batch_fires_the_hooks_for_every_picture(engine, log, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        gradient((64, 64)).save(tmp_path / "in" / name)
    job = engine.submit_img2img_batch(params(), tmp_path / "in", tmp_path / "out")
    job.wait()
    assert job.error is None and len(job.result.written) == 2
    stages = Counter(stage for stage, _ in log)
    assert stages["params_resolved"] == stages["postprocess_image"] == 2


def test_the_argument_models_take_a1111s_order_names_and_defaults():
    assert list(SDUpscaleArgs.model_fields) == ["info", "overlap", "upscaler_index", "scale_factor"]
    assert arg_values(SDUpscaleArgs, [None, 32, 1, 3.0]) == {
        "info": None, "overlap": 32, "upscaler_index": 1, "scale_factor": 3.0
    }  # fmt: skip
    assert arg_values(SDUpscaleArgs, {"overlap": 0})["scale_factor"] == 2.0
    assert arg_values(OutpaintingArgs, None)["direction"] == ["left", "right", "up", "down"]
    with pytest.raises(ArgsError, match="at most 4"):
        arg_values(SDUpscaleArgs, [None, 1, 2, 3, 4])
    with pytest.raises(ArgsError, match="unknown arg") as unknown:
        arg_values(SDUpscaleArgs, {"tile": 3})
    assert unknown.value.field == "tile"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (ScriptCall("SD upscale", {"overlap": 999}), "overlap"),
        (ScriptCall("SD upscale", {"scale_factor": 9}), "scale_factor"),
        (ScriptCall("Outpainting", {"pixels": 0}), "pixels"),
        (ScriptCall("Outpainting", {"mask_blur": "lots"}), "mask_blur"),
        *[(ScriptCall("SD upscale", {"scale_factor": v}), "scale_factor") for v in (math.nan, math.inf)],
        *[(ScriptCall("Outpainting", {"pixels": v}), "pixels") for v in (math.nan, -math.inf)],
    ],
)
def test_bad_script_values_are_refused_before_the_job_is_queued(engine, call, field):
    before = engine.queue.pending()
    with pytest.raises(ValueError, match=f"{call.title}: {field}"):
        engine.submit_img2img(params(), Img2ImgInputs([gradient()]), script=call)
    assert engine.queue.pending() == before


def test_an_unknown_upscaler_fails_the_job_with_its_name(engine):
    call = ScriptCall("SD upscale", {"upscaler_index": "Nope"})
    with pytest.raises(ValueError, match="unknown upscaler 'Nope'"):
        run(engine, call, params(), gradient())
    with pytest.raises(ValueError, match="index 99 is out of range"):
        run(engine, ScriptCall("SD upscale", {"upscaler_index": 99}), params(), gradient())
