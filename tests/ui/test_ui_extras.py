"""Upscaling tab handlers without a browser: values → ExtrasParams, each mode submits the right job,
missing input is a message."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.fakes.fake_engine import FakeEngine
from tests.fakes.ui_values import extras_values as values
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import follow_job
from ui.tabs.upscaling import build_extras_params, submit_extras


def test_params_from_values():
    params = build_extras_params(values(resize="Scale to", upscaler_2="Nearest", upscaler_2_visibility=0.3))
    assert (params.resize_mode, params.upscaling_resize_w, params.upscaling_resize_h) == (1, 300, 200)
    assert (params.upscaler_2, params.upscaler_2_visibility) == ("Nearest", 0.3)


def test_single_image_is_upscaled(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(path)
    updates = list(
        follow_job(SessionJobs(), "s", lambda: submit_extras(FakeEngine(), values(image=str(path))))
    )
    assert updates[-1].images[0].size == (80, 60)


def test_batch_process_takes_every_upload(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (20, 20)).save(paths[-1])
    job = submit_extras(FakeEngine(), values(mode="Batch process", files=[str(p) for p in paths]))
    job.wait()
    assert len(job.result.images) == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "add a picture"),
        ({"mode": "Batch from directory"}, "input folder"),
        ({"mode": "Batch from directory", "input_dir": "/nope", "output_dir": "/tmp/x"}, "folder not found"),
        ({"upscaling_resize": 9.0}, "upscaling_resize"),
    ],
)
def test_missing_or_bad_input_is_a_message(changes, message):
    updates = list(follow_job(SessionJobs(), "s", lambda: submit_extras(FakeEngine(), values(**changes))))
    assert message in (updates[-1].message or "")
