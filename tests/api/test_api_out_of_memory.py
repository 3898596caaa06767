"""The API when a job runs out of memory (in the UNet, the VAE decode, an upscaler of Extras or of
hires fix): 507 with a JSON `detail` saying what to try, the memory freed, saved pictures unchanged,
and the next request answered as usual. On CUDA `info.notes` gives the job's peak GPU memory."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engine.service import memory
from tests.fakes.memory import OOM_TEXT, running_out_in, saved_files


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


TXT2IMG = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3, "save_images": True}
HIRES = {**TXT2IMG, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "atelier-x2"}
EXTRAS = {"image": b64(Image.new("RGB", (32, 32), "teal")), "upscaler_1": "atelier-x2", "upscaling_resize": 2}
# case → (the stage that runs out, the route, its body, the job kind the message names)
CASES = {
    "UNet": ("UNet", "txt2img", TXT2IMG, "txt2img"),
    "VAE decode": ("VAE decode", "txt2img", TXT2IMG, "txt2img"),
    "Extras upscaler": ("upscaler", "extra-single-image", EXTRAS, "extras"),
    "hires fix upscaler": ("upscaler", "txt2img", HIRES, "txt2img"),
}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    data = tmp_path_factory.mktemp("oom-api")
    engine = Engine(data_dir=data, device="cpu", load_extensions=False)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, engine


@pytest.mark.parametrize("case", CASES)
def test_out_of_memory_is_a_507_in_json_and_the_next_request_runs(api, monkeypatch, case):
    client, engine = api
    stage_name, route, body, kind = CASES[case]
    first = client.post(f"/sdapi/v1/{route}", json=body)
    assert first.status_code == 200, first.text  # loads the model and saves pictures
    outputs = engine.data_dir / "outputs"
    before = saved_files(outputs)
    assert before

    with running_out_in(stage_name, engine, monkeypatch) as (stage, release):
        answer = client.post(f"/sdapi/v1/{route}", json=body)

    assert answer.status_code == 507 and answer.headers["content-type"] == "application/json"
    detail = answer.json()["detail"]
    assert detail.startswith(f"Out of memory during {kind} ({OOM_TEXT}).") and "Try a smaller" in detail
    assert release.held_at_calls == [0] and stage.held() == 0
    assert saved_files(outputs) == before

    after = client.post(f"/sdapi/v1/{route}", json=body)
    assert after.status_code == 200, after.text
    assert release.held_at_calls == [0]


def test_info_notes_give_the_peak_gpu_memory_when_there_is_a_reading(api, monkeypatch):
    client, _engine = api
    monkeypatch.setattr(memory, "peak_memory_gib", lambda device: 5.5)
    answer = client.post("/sdapi/v1/txt2img", json=TXT2IMG)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["info"])["notes"][-1] == "Peak GPU memory: 5.50 GiB"


def test_a_cpu_only_run_has_no_peak_gpu_memory_note(api):
    client, _engine = api
    answer = client.post("/sdapi/v1/txt2img", json=TXT2IMG)
    assert answer.status_code == 200, answer.text
    assert not any("GPU memory" in note for note in json.loads(answer.json()["info"])["notes"])
