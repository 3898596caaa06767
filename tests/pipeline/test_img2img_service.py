"""The engine facade runs img2img jobs like txt2img ones: queued, with the Settings' img2img options
filled in at submit time, saved under img2img-images, and batch folders as one job."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from engine.pipeline.img2img import Img2ImgInputs
from engine.schema.infotext import parse_infotext
from engine.schema.params import Img2ImgParams


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from engine.service.facade import Engine

    return Engine(data_dir=tmp_path_factory.mktemp("data"), device="cpu")


def params(**kw) -> Img2ImgParams:
    return Img2ImgParams(
        **{"prompt": "a blue circle", "steps": 4, "seed": 3, "width": 64, "height": 64, **kw}
    )


def test_settings_fill_the_img2img_options_and_images_are_saved(engine):
    engine.update_settings(initial_noise_multiplier=0.9, img2img_fix_steps=True)
    try:
        job = engine.submit_img2img(
            params(denoising_strength=0.5), Img2ImgInputs([Image.new("RGB", (64, 64), "red")])
        )
        job.wait()
        assert job.error is None
        assert job.progress.job_steps == 4  # fix steps: exactly the slider's steps
        info = parse_infotext(job.result.infotexts[0])
        assert info["Noise multiplier"] == "0.9" and info["Denoising strength"] == "0.5"
        path = job.result.paths[0]
        assert path is not None and "img2img-images" in path.parts
        # A job's own value wins over the setting.
        own = engine.img2img(
            params(initial_noise_multiplier=1.0), Img2ImgInputs([Image.new("RGB", (64, 64))])
        )
        assert "Noise multiplier" not in own.infotexts[0]
    finally:
        engine.update_settings(initial_noise_multiplier=1.0, img2img_fix_steps=False)


def test_a_batch_is_one_job_reporting_what_it_wrote(engine, tmp_path: Path):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 64), "green").save(tmp_path / "in" / "leaf.png")
    (tmp_path / "in" / "readme.txt").write_text("hello")
    job = engine.submit_img2img_batch(params(), tmp_path / "in", tmp_path / "out")
    job.wait()
    report = job.result
    assert [p.name for p in report.written] == ["leaf.png"]
    assert report.skipped[0][0] == "readme.txt"


def test_a_batch_passes_its_controlnet_units_to_every_picture(engine, tmp_path: Path, monkeypatch):
    from engine.controlnet.units import ControlInput, ControlNetUnit
    from engine.pipeline import img2img as pipeline
    from engine.pipeline.results import GenerationResult

    seen = []

    def spy(model, one, inputs, **kw):
        seen.append((inputs.init_images[0].getpixel((0, 0)), kw["control"], kw["controlnets"]))
        return GenerationResult(params=one, images=[inputs.init_images[0]], infotexts=["x"], seeds=[1])

    monkeypatch.setattr(pipeline, "img2img", spy)
    (tmp_path / "in").mkdir()
    for name, colour in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / "in" / f"{name}.png")
    control = [ControlInput(ControlNetUnit(module="canny", model="edges"), None)]
    job = engine.submit_img2img_batch(params(), tmp_path / "in", tmp_path / "out", control=control)
    job.wait()
    assert job.error is None and len(job.result.written) == 2
    assert [pixel for pixel, _, _ in seen] == [(255, 0, 0), (0, 0, 255)]
    assert all(units == control and library is engine.controlnets for _, units, library in seen)


def test_a_missing_batch_folder_is_refused_at_submit(engine, tmp_path: Path):
    with pytest.raises(ValueError, match="folder not found"):
        engine.submit_img2img_batch(params(), tmp_path / "missing", tmp_path / "out")
