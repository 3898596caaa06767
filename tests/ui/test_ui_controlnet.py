"""ControlNet units panel handlers without a browser: values → units, threshold sliders that follow
the preprocessor, unavailable preprocessors kept visible, and units reaching the submitted job."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.fakes.fake_engine import FakeEngine
from ui.handlers.controlnet import UNIT_FIELDS, preprocessor_choices, threshold_updates, units_from_values
from ui.handlers.inputs import open_picture
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import run_txt2img

VALUES = ("a red circle", "", "Euler a", "Automatic", 4.0, 7.0, 1.0, 128.0, 128.0, 1.0, 1.0, [], [])


def unit_values(**kw):
    base = {
        "enabled": True,
        "image": Image.new("RGB", (64, 64)),
        "module": "canny",
        "model": "control_fake_canny",
        "weight": 0.7,
        "guidance_start": 0.1,
        "guidance_end": 0.9,
        "control_mode": "ControlNet is more important",
        "resize_mode": "Just Resize",
        "pixel_perfect": True,
        "processor_res": 256.0,
        "threshold_a": 50.0,
        "threshold_b": 150.0,
        "hr_option": "Low res only",
    }
    base.update(kw)
    return [base[name] for name in UNIT_FIELDS]


def test_values_become_units_and_disabled_ones_are_dropped():
    values = unit_values() + unit_values(enabled=False) + unit_values(module="shuffle")
    inputs = units_from_values(values, open_picture)
    assert len(inputs) == 2
    first = inputs[0].unit
    assert (first.module, first.weight, first.guidance_start, first.guidance_end) == ("canny", 0.7, 0.1, 0.9)
    assert (first.control_mode, first.resize_mode, first.pixel_perfect) == (
        "ControlNet is more important", "Just Resize", True,
    )  # fmt: skip
    assert (first.processor_res, first.threshold_a, first.threshold_b) == (256, 50.0, 150.0)
    assert first.hr_option == "Low res only"
    assert inputs[1].unit.threshold_a is None  # shuffle has no thresholds: the sliders' values are ignored


def test_a_bad_unit_value_is_a_clear_error():
    with pytest.raises(ValueError, match="guidance start"):
        units_from_values(unit_values(guidance_start=0.9, guidance_end=0.1), open_picture)


def test_threshold_sliders_follow_the_preprocessor():
    a, b = threshold_updates("canny")
    assert a["visible"] and a["label"] == "Low Threshold" and a["value"] == 100
    assert b["label"] == "High Threshold" and b["maximum"] == 255
    a, b = threshold_updates("tile_resample")
    assert a["label"] == "Down Sampling Rate" and not b["visible"]
    assert threshold_updates("shuffle") == ({"visible": False}, {"visible": False})


def test_unavailable_preprocessors_stay_listed():
    choices = dict((value, label) for label, value in preprocessor_choices(FakeEngine().preprocessors()))
    assert choices["canny"] == "canny"
    assert choices["softedge_hed"].endswith("(unavailable: no weights)")


def test_units_reach_the_submitted_txt2img_job():
    engine = FakeEngine()
    updates = list(run_txt2img(engine, SessionJobs(), "s", VALUES, control_values=unit_values()))
    assert updates[-1].images
    (control,) = engine.submitted_control
    assert control[0].unit.module == "canny" and control[0].image.size == (64, 64)


def test_no_enabled_unit_submits_a_plain_job():
    engine = FakeEngine()
    list(run_txt2img(engine, SessionJobs(), "s", VALUES, control_values=unit_values(enabled=False)))
    assert engine.submitted_control == [None]


def test_preview_of_a_canny_map():
    engine = FakeEngine()
    picture = Image.new("RGB", (96, 64), "blue")
    picture.paste("yellow", (30, 20, 60, 44))
    units = units_from_values(unit_values(image=picture, pixel_perfect=False), open_picture)
    preview = engine.preview_control(units[0].unit, picture, 128, 128)
    assert preview.size == (128, 128) and max(preview.convert("L").getextrema()) == 255
