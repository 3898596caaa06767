"""The img2img scripts over the API as A1111 clients call them: `script_name` with positional
`script_args` in A1111's order (SD upscale's upscaler as an index, "Poor man's outpainting" by its
A1111 title), their hooks firing, and bad values answered with a 422 naming the arg."""

from __future__ import annotations

import base64
import io
import json
import textwrap

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from extensions.sd_upscale.tiles import tile_boxes
from tests.fakes.extensions import engine_with_extension, extension_module

RECORDER = textwrap.dedent(
    """
    LOG = []

    def setup(ext):
        ext.on("params_resolved", lambda ctx: LOG.append(ctx.kind))
    """
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from engine.cmd_args import parse_args
    from ui.server import build_app

    data = tmp_path_factory.mktemp("api-scripts")
    engine = engine_with_extension(data, "api-recorder", RECORDER)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def size_of(text: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(text))).size


def body(**kw) -> dict:
    picture = Image.new("RGB", (80, 64), (30, 90, 200))
    base = {
        "prompt": "a red circle",
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 4,
        "sampler_name": "Euler",
    }
    return {**base, "init_images": [b64(picture)], "denoising_strength": 0.3, **kw}


def test_sd_upscale_with_a1111s_positional_args_and_upscaler_index(client):
    log = extension_module("api-recorder").LOG
    log.clear()
    answer = client.post(
        "/sdapi/v1/img2img", json=body(script_name="SD upscale", script_args=["", 16, 1, 2.0])
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert [size_of(i) for i in data["images"]] == [(160, 128)]
    infotext = json.loads(data["info"])["infotexts"][0]
    assert "SD upscale upscaler: Lanczos" in infotext and "SD upscale overlap: 16" in infotext
    tiles = len(tile_boxes(160, 128, 64, 64, 16))
    assert log == ["img2img"] * tiles  # one img2img generation per tile, every hook firing


def test_outpainting_by_a1111s_title(client):
    args = [16, 4, 0, ["left"]]  # pixels, mask blur, masked content (fill), directions
    answer = client.post(
        "/sdapi/v1/img2img", json=body(script_name="Poor man's outpainting", script_args=args)
    )
    assert answer.status_code == 200, answer.text
    assert [size_of(i) for i in answer.json()["images"]] == [(96, 64)]


@pytest.mark.parametrize(
    ("name", "args", "where"),
    [
        ("SD upscale", ["", 999, 1, 2.0], ["body", "script_args", "overlap"]),
        ("SD upscale", {"scale_factor": "big"}, ["body", "script_args", "scale_factor"]),
        ("SD upscale", {"tiles": 3}, ["body", "script_args", "tiles"]),
        ("SD upscale", ["", 16, 1, 2.0, "extra"], ["body", "script_args"]),
        ("Outpainting", [0], ["body", "script_args", "pixels"]),
    ],
)
def test_bad_script_args_are_a_422_naming_the_arg(client, name, args, where):
    answer = client.post("/sdapi/v1/img2img", json=body(script_name=name, script_args=args))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == where


def test_an_img2img_script_refuses_txt2img(client):
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "script_name": "SD upscale"})
    assert answer.status_code == 422 and "does not run in txt2img" in answer.text
