"""The API on SD 3 and Flux checkpoints (tiny diffusers folders in the checkpoints folder), with
A1111 and Forge clients' request shapes: listing, txt2img with the Shift override and Flux's
`distilled_cfg_scale`, hires fix, img2img, PNG Info reading the parameters back."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.fakes.api_bodies import b64, infotext, picture
from tests.fakes.tiny_flow import write_tiny_flux, write_tiny_sd3


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    data = tmp_path_factory.mktemp("flow-api")
    folder = tmp_path_factory.mktemp("checkpoints")  # the users' checkpoints folder (--ckpt-dir)
    write_tiny_sd3(folder / "tiny-sd3")
    write_tiny_flux(folder / "tiny-flux")
    engine = Engine(data_dir=data, models_dirs=[folder], device="cpu", load_extensions=False)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def job(**kw) -> dict:
    base = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 4, "width": 64, "height": 64,
            "seed": 3, "sampler_name": "Euler", "scheduler": "Simple"}  # fmt: skip
    return {**base, "override_settings": {"sd_model_checkpoint": "tiny-sd3"}, **kw}


def test_txt2img_on_sd3_and_png_info_reads_it_back(client):
    assert "tiny-sd3" in {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
    answer = client.post(
        "/sdapi/v1/txt2img", json=job(override_settings={"sd_model_checkpoint": "tiny-sd3", "shift": 4.5})
    )
    text = infotext(answer)
    assert "Model: tiny-sd3" in text and "Shift: 4.5" in text and picture(answer).size == (64, 64)
    read = client.post("/sdapi/v1/png-info", json={"image": answer.json()["images"][0]})
    assert read.status_code == 200, read.text
    assert read.json()["parameters"]["Shift"] == "4.5" and read.json()["parameters"]["Model"] == "tiny-sd3"


def test_hires_fix_and_img2img_on_sd3(client):
    hires = client.post("/sdapi/v1/txt2img", json=job(enable_hr=True, hr_scale=1.5, denoising_strength=0.5))
    assert "Hires upscale: 1.5" in infotext(hires) and picture(hires).size == (96, 96)
    body = job(init_images=[b64(Image.new("RGB", (64, 64), "navy"))], denoising_strength=0.6)
    answer = client.post("/sdapi/v1/img2img", json=body)
    assert "Denoising strength: 0.6" in infotext(answer) and picture(answer).size == (64, 64)


def flux_job(**kw) -> dict:
    base = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 3, "cfg_scale": 1,
            "sampler_name": "Euler", "scheduler": "Simple"}  # fmt: skip
    return {**base, "override_settings": {"sd_model_checkpoint": "tiny-flux"}, **kw}


def test_txt2img_and_img2img_on_flux_with_forge_s_distilled_cfg_scale(client):
    answer = client.post("/sdapi/v1/txt2img", json=flux_job(distilled_cfg_scale=2.5))
    text = infotext(answer)
    assert "Model: tiny-flux" in text and "Distilled CFG Scale: 2.5" in text
    read = client.post("/sdapi/v1/png-info", json={"image": answer.json()["images"][0]})
    assert read.json()["parameters"]["Distilled CFG Scale"] == "2.5"
    body = flux_job(init_images=[b64(Image.new("RGB", (64, 64), "navy"))], denoising_strength=0.6)
    assert "Denoising strength: 0.6" in infotext(client.post("/sdapi/v1/img2img", json=body))
    bad = client.post("/sdapi/v1/txt2img", json=flux_job(width=72))
    assert bad.status_code == 400 and "multiples of 16 px" in bad.json()["detail"]
