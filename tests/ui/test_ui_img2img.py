"""img2img / Inpaint handlers without a browser: the tab's values become the right job (params and
pictures) for every mode, a script with its values, and Batch; missing input is a message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.plugins.script_jobs import ScriptCall
from engine.schema.params import Img2ImgParams
from tests.fakes.fake_engine import FakeEngine
from tests.fakes.ui_values import img2img_values as values
from ui.handlers.img2img import painted_mask, run_img2img, submit_img2img
from ui.handlers.progress import SessionJobs
from ui.handlers.send_to import editor_value, selected_picture
from ui.handlers.txt2img import GenInfo


def picture(size=(96, 64), colour=(200, 40, 40, 255)) -> Image.Image:
    return Image.new("RGBA", size, colour)


def strokes(size=(96, 64), box=(10, 10, 30, 30)) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), box)
    return layer


def submitted(engine, **changes):
    job = submit_img2img(engine, values(**changes))
    job.wait()
    return engine.submitted[-1], engine.submitted_inputs[-1] if engine.submitted_inputs else None


def test_img2img_mode_sends_the_picture_and_no_mask_options():
    engine = FakeEngine()
    params, inputs = submitted(engine, init_image=picture())
    assert isinstance(params, Img2ImgParams)
    assert params.denoising_strength == 0.6 and (params.width, params.height) == (128, 128)
    assert inputs.mask is None and inputs.init_images[0].size == (96, 64)
    assert params.mask_blur is None and params.inpainting_fill is None  # not written to the infotext


def test_inpaint_mode_turns_brush_strokes_into_the_mask():
    engine = FakeEngine()
    editor = {"background": picture(), "layers": [strokes()], "composite": picture()}
    params, inputs = submitted(
        engine, mode="Inpaint", inpaint=editor, inpainting_fill="latent noise", inpaint_full_res="Only masked"
    )
    mask = np.asarray(inputs.mask)
    assert mask[20, 20] == 255 and mask[50, 80] == 0
    assert (params.inpainting_fill, params.inpaint_full_res, params.mask_blur) == (2, 1, 4)


def test_painted_mask_unites_layers_and_fits_the_picture():
    mask = painted_mask(picture(), [strokes(), strokes((48, 32), (40, 0, 48, 8))])
    assert mask.size == (96, 64)
    assert np.asarray(mask)[20, 20] == 255 and np.asarray(mask)[2, 90] == 255


def test_inpaint_sketch_masks_where_the_strokes_are():
    engine = FakeEngine()
    original = picture()
    sketched = original.copy()
    sketched.paste((0, 0, 255, 255), (50, 20, 70, 40))
    editor = {"background": original, "layers": [], "composite": sketched}
    _, inputs = submitted(engine, mode="Inpaint sketch", inpaint_sketch=editor, mask_blur=0.0)
    mask = np.asarray(inputs.mask)
    assert mask[30, 60] == 255 and mask[5, 5] == 0
    assert inputs.init_images[0].getpixel((60, 30))[:3] == (0, 0, 255)  # starts from the sketch


def test_sketch_mode_starts_from_the_drawing():
    engine = FakeEngine()
    drawn = picture(colour=(10, 200, 10, 255))
    _, inputs = submitted(
        engine, mode="Sketch", sketch={"background": picture(), "layers": [], "composite": drawn}
    )
    assert inputs.init_images[0].getpixel((0, 0))[:3] == (10, 200, 10) and inputs.mask is None


def test_inpaint_upload_takes_picture_and_mask():
    engine = FakeEngine()
    mask = Image.new("L", (96, 64), 0)
    _, inputs = submitted(engine, mode="Inpaint upload", upload_image=picture(), upload_mask=mask)
    assert inputs.mask is mask


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "img2img"}, "upload a picture"),
        ({"mode": "Inpaint"}, "paint the area"),
        ({"mode": "Inpaint upload", "upload_image": picture()}, "both the picture and its mask"),
        ({"mode": "Batch", "batch_input_dir": "", "batch_output_dir": ""}, "input folder"),
        ({"mode": "img2img", "init_image": picture(), "denoising_strength": 1.5}, "denoising_strength"),
    ],
)
def test_missing_or_bad_input_is_a_message(changes, message):
    updates = list(run_img2img(FakeEngine(), SessionJobs(), "s", values(**changes)))
    assert updates[-1].message and message in updates[-1].message
    assert not updates[-1].running


def test_resize_by_scales_the_picture_size():
    engine = FakeEngine()
    params, _ = submitted(engine, init_image=picture((100, 60)), resize_by="Resize by", scale_by=1.5)
    assert (params.width, params.height) == (152, 88)


def test_a_script_takes_the_job_with_its_values_and_the_picture():
    """Outpainting, SD upscale and the other scripts are extensions: the tab hands the engine the
    picture, the job without mask options, and the script's call (the engine runs it)."""
    engine = FakeEngine()
    for call in (ScriptCall("Outpainting", {"pixels": 32.0}), ScriptCall("SD upscale", {"overlap": 32.0})):
        v = {**values(init_image=picture((96, 64)), script=call.title), "script_call": call}
        submit_img2img(engine, v).wait()
        params, inputs = engine.submitted[-1], engine.submitted_inputs[-1]
        assert engine.submitted_extensions[-1] == (None, call)
        assert inputs.init_images[0].size == (96, 64) and inputs.mask is None
        assert params.mask_blur is None  # the script sets its own mask options


def test_batch_mode_runs_the_folder(tmp_path):
    (tmp_path / "in").mkdir()
    picture().save(tmp_path / "in" / "a.png")
    updates = list(
        run_img2img(
            FakeEngine(),
            SessionJobs(),
            "s",
            values(
                mode="Batch", batch_input_dir=str(tmp_path / "in"), batch_output_dir=str(tmp_path / "out")
            ),
        )
    )
    assert "1 picture(s) written" in updates[-1].info.notes[0]
    assert (tmp_path / "out" / "a.png").is_file()


def test_run_reports_images():
    updates = list(run_img2img(FakeEngine(), SessionJobs(), "s", values(init_image=picture())))
    assert updates[-1].images and updates[-1].info.infotexts


def test_send_to_picks_the_selected_gallery_picture(tmp_path):
    a, b = picture(colour=(1, 2, 3, 255)), picture(colour=(9, 9, 9, 255))
    b.save(tmp_path / "b.png")
    gallery = [(a, None), (str(tmp_path / "b.png"), None)]
    assert selected_picture(gallery, GenInfo(selected=1)).getpixel((0, 0))[:3] == (9, 9, 9)
    assert selected_picture(gallery, None).getpixel((0, 0))[:3] == (1, 2, 3)
    with pytest.raises(ValueError, match="generate one first"):
        selected_picture([], None)
    assert editor_value(a)["background"] is a
