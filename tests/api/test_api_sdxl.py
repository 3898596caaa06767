"""The API on SDXL checkpoints in a checkpoints folder, with A1111 clients' request shapes:
listing, txt2img, hires fix, the refiner, img2img, and clear 4xx answers for a bad refiner."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.fakes.api_bodies import b64, infotext, picture


@pytest.fixture(scope="module")
def client(tmp_path_factory, sdxl_files):
    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    data = tmp_path_factory.mktemp("sdxl-api")
    folder = sdxl_files["base"].parent  # the users' checkpoints folder (--ckpt-dir)
    engine = Engine(data_dir=data, models_dirs=[folder], device="cpu", load_extensions=False)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def job(**kw) -> dict:
    base = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 4, "width": 64, "height": 64,
            "seed": 3, "sampler_name": "Euler"}  # fmt: skip
    return {**base, "override_settings": {"sd_model_checkpoint": "xl-base"}, **kw}


def test_sd_models_lists_the_sdxl_checkpoints(client):
    models = {m["model_name"]: m for m in client.get("/sdapi/v1/sd-models").json()}
    assert {"xl-base", "xl-refiner", "xl-inpainting", "xl-folder"} <= set(models)
    assert models["xl-base"]["filename"].endswith("xl-base.safetensors")


def test_txt2img_and_hires_fix_on_sdxl(client):
    answer = client.post("/sdapi/v1/txt2img", json=job())
    assert "Model: xl-base" in infotext(answer) and picture(answer).size == (64, 64)
    hires = client.post("/sdapi/v1/txt2img", json=job(enable_hr=True, hr_scale=1.5, denoising_strength=0.5))
    assert "Hires upscale: 1.5" in infotext(hires) and picture(hires).size == (96, 96)


def test_the_refiner_through_the_api(client):
    text = infotext(
        client.post("/sdapi/v1/txt2img", json=job(refiner_checkpoint="xl-refiner", refiner_switch_at=0.5))
    )
    assert "Refiner: xl-refiner [" in text and "Refiner switch at: 0.5" in text
    none = infotext(
        client.post("/sdapi/v1/txt2img", json=job(refiner_checkpoint="None", refiner_switch_at=0.5))
    )
    assert "Refiner" not in none  # A1111 clients send "None" for no refiner


def test_img2img_with_the_refiner_on_sdxl(client):
    source = Image.new("RGB", (64, 64), "navy")
    body = job(init_images=[b64(source)], denoising_strength=0.6, refiner_checkpoint="xl-refiner")
    text = infotext(client.post("/sdapi/v1/img2img", json=body))
    assert "Denoising strength: 0.6" in text and "Refiner: xl-refiner [" in text


def test_a_bad_refiner_is_a_4xx_with_a_json_message(client):
    missing = client.post("/sdapi/v1/txt2img", json=job(refiner_checkpoint="nope"))
    assert missing.status_code == 404 and "refiner not found" in missing.json()["detail"]
    out_of_range = client.post(
        "/sdapi/v1/txt2img", json=job(refiner_checkpoint="xl-refiner", refiner_switch_at=2)
    )
    assert out_of_range.status_code == 422
    # the built-in SD 1.x model works in another latent space
    mixed = client.post("/sdapi/v1/txt2img", json=job(refiner_checkpoint="atelier-tiny"))
    assert 400 <= mixed.status_code < 500 and "latent space" in json.dumps(mixed.json())
    assert client.post("/sdapi/v1/txt2img", json=job()).status_code == 200  # the server carries on
