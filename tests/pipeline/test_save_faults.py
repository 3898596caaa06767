"""Faults while saving a picture (disk full, permission denied, a failing rename): nothing partial is
left, files already there are untouched, and the error says where and why, in the engine, the UI
and the API (507 for a full disk, JSON either way)."""

from __future__ import annotations

import errno
import os

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine.output import images as image_io
from engine.output.images import SaveError, save_image, save_image_named
from ui.common import error_message

PICTURE = Image.new("RGB", (16, 16), "red")


def fail_with(code: int):
    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    return fail


FAULTS = {
    "disk full while writing": ("fsync", errno.ENOSPC, "the disk is full"),
    "quota used up while writing": ("fsync", errno.EDQUOT, "the disk quota is used up"),
    "permission denied creating the file": ("mkstemp", errno.EACCES, "permission denied"),
    "read-only file system": ("mkstemp", errno.EROFS, "the file system is read-only"),
    "disk full while naming the file": ("link+open", errno.ENOSPC, "the disk is full"),
}


def inject(monkeypatch, where: str, code: int) -> None:
    if where == "fsync":
        monkeypatch.setattr(image_io.os, "fsync", fail_with(code))
    elif where == "mkstemp":
        monkeypatch.setattr(image_io.tempfile, "mkstemp", fail_with(code))
    else:  # no hard links here, and the fallback's exclusive create fails too
        monkeypatch.setattr(image_io.os, "link", fail_with(errno.EPERM))
        monkeypatch.setattr(image_io.os, "open", fail_with(code))


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("saver", ["numbered", "named"])
def test_a_failed_save_leaves_nothing_partial_and_says_why(tmp_path, monkeypatch, fault, saver):
    where, code, why = FAULTS[fault]
    folder = tmp_path / "out"
    existing = save_image(PICTURE, folder, seed=1, infotext="first") if saver == "numbered" else None
    if saver == "named":
        existing = save_image_named(PICTURE, folder, "picture", infotext="first")
    before = {p: p.read_bytes() for p in existing.parent.iterdir()}
    inject(monkeypatch, where, code)
    with pytest.raises(SaveError) as failed:
        if saver == "numbered":
            save_image(PICTURE, folder, seed=2, infotext="second")
        else:
            save_image_named(PICTURE, folder, "picture", infotext="second")
    message = str(failed.value)
    assert why in message and str(existing.parent) in message and "nothing was saved" in message
    assert failed.value.errno == code and isinstance(failed.value.__cause__, OSError)
    after = {p: p.read_bytes() for p in existing.parent.iterdir()}
    assert after == before  # no temp file, no empty placeholder, the old picture unchanged
    assert error_message(failed.value) == message  # the UI shows the sentence as it is


@pytest.fixture(scope="module")
def api_client(tmp_path_factory):
    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    data = tmp_path_factory.mktemp("save-faults")
    engine = Engine(data_dir=data, device="cpu", load_extensions=False)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, engine


BODY = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3, "save_images": True}


@pytest.mark.parametrize(
    ("fault", "status"), [("disk full while writing", 507), ("permission denied creating the file", 500)]
)
def test_the_api_reports_a_failed_save_in_json(api_client, monkeypatch, fault, status):
    client, engine = api_client
    outputs = engine.data_dir / "outputs"
    saved = client.post("/sdapi/v1/txt2img", json=BODY)
    assert saved.status_code == 200, saved.text
    before = sorted(p for p in outputs.rglob("*") if p.is_file())
    where, code, why = FAULTS[fault]
    with monkeypatch.context() as patch:
        inject(patch, where, code)
        answer = client.post("/sdapi/v1/txt2img", json=BODY)
    assert answer.status_code == status and answer.headers["content-type"] == "application/json"
    assert why in answer.json()["detail"] and "nothing was saved" in answer.json()["detail"]
    assert sorted(p for p in outputs.rglob("*") if p.is_file()) == before
    assert client.post("/sdapi/v1/txt2img", json=BODY).status_code == 200  # saving works again after
