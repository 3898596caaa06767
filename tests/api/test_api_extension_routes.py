"""The routes A1111 clients probe, driven with the request shapes those clients send:
`/sdapi/v1/extensions` and the ControlNet extension's `/controlnet/*` (version, model_list,
module_list, settings, detect), on the built-in model's engine in this process."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from tests.fakes.server_process import write_test_controlnet

A1111_EXTENSION_KEYS = {"name", "remote", "branch", "commit_hash", "version", "commit_date", "enabled"}


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("L")


def git(folder, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    data = tmp_path_factory.mktemp("a1111-routes")
    write_test_controlnet(data / "ControlNet" / "route-canny")
    # A user extension installed from git, as the Extensions tab leaves it.
    user = data / "extensions" / "git-probe"
    user.mkdir(parents=True)
    (user / "extension.toml").write_text('name = "git-probe"\nversion = "2.1.0"\ndescription = "probe"\n')
    (user / "main.py").write_text("def setup(ext):\n    pass\n")
    git(user, "init", "-q", "-b", "main")
    git(user, "add", ".")
    git(user, "commit", "-q", "-m", "first")
    git(user, "remote", "add", "origin", "https://example.invalid/git-probe.git")
    engine = Engine(data_dir=data, device="cpu", controlnet_dir=data / "ControlNet")
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def test_extensions_lists_builtin_and_user_extensions_in_a1111_shape(client):
    items = {item["name"]: item for item in client.get("/sdapi/v1/extensions").json()}
    builtin = {"cfg-rescale", "outpainting", "prompt_matrix", "prompts-from-file", "sd_upscale", "xyz_plot"}
    assert set(items) == {*builtin, "git-probe"}
    assert all(A1111_EXTENSION_KEYS <= set(item) for item in items.values())
    builtin = items["xyz_plot"]
    assert builtin["builtin"] is True and builtin["enabled"] is True and builtin["version"] == "1.0.0"
    # Its folder sits in Atelier's own repository, whose history is not the extension's.
    assert builtin["remote"] == "" and builtin["commit_hash"] == ""
    user = items["git-probe"]
    assert user["builtin"] is False and user["enabled"] is True and user["version"] == "2.1.0"
    assert user["remote"] == "https://example.invalid/git-probe.git" and user["branch"] == "main"
    assert re.fullmatch(r"[0-9a-f]{40}", user["commit_hash"]) and user["commit_date"].isdigit()


def test_controlnet_version_settings_and_model_list(client):
    assert client.get("/controlnet/version").json() == {"version": 2}
    assert client.get("/controlnet/settings").json()["control_net_unit_count"] >= 1
    models = client.get("/controlnet/model_list", params={"update": "true"}).json()["model_list"]
    assert any(re.fullmatch(r"route-canny \[[0-9a-f]{8}\]", m) for m in models)
    assert any(m.startswith("atelier-tiny-canny [") for m in models)  # the shipped one


def test_a_model_list_title_works_in_a_txt2img_unit(client):
    title = next(
        m for m in client.get("/controlnet/model_list").json()["model_list"] if m.startswith("route-canny")
    )
    control = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(control).rectangle((16, 16, 48, 48), outline="white", width=3)
    unit = {"enabled": True, "module": "canny", "model": title, "weight": 1.0, "image": b64(control)}
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 1,
            "alwayson_scripts": {"controlnet": {"args": [unit]}}}  # fmt: skip
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    assert f"Model: {title}" in json.loads(answer.json()["info"])["infotexts"][0]


def test_module_list_describes_each_preprocessor(client):
    for alias_names in ("false", "true"):
        data = client.get("/controlnet/module_list", params={"alias_names": alias_names}).json()
        assert "canny" in data["module_list"] and set(data["module_list"]) == set(data["module_detail"])
    canny = data["module_detail"]["canny"]
    assert [s["name"] for s in canny["sliders"]] == [
        "Preprocessor Resolution",
        "Low Threshold",
        "High Threshold",
    ]
    assert canny["sliders"][1] == {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1.0}
    assert canny["available"] is True and data["module_detail"]["none"]["sliders"] == []
    openpose = data["module_detail"]["openpose"]
    assert openpose["available"] is False and "body_pose_model.pth" in openpose["reason"]


def ring_picture(size: int = 128) -> Image.Image:
    picture = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(picture).ellipse((24, 24, 104, 104), fill="white")
    return picture


def test_detect_runs_a_preprocessor_as_the_extension_does(client):
    body = {
        "controlnet_module": "canny",
        "controlnet_input_images": [b64(ring_picture()), "data:image/png;base64," + b64(ring_picture())],
        "controlnet_processor_res": 128,
        "controlnet_threshold_a": 100,
        "controlnet_threshold_b": 200,
    }
    answer = client.post("/controlnet/detect", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["info"] == "Success" and len(data["images"]) == 2
    edges = np.asarray(unb64(data["images"][0]).resize((128, 128))) > 127
    y, x = np.mgrid[:128, :128]
    distance = np.abs(np.hypot(x - 63.5, y - 63.5) - 40)  # from the disc's outline (radius 40)
    assert edges[distance < 4].sum() > 0.6 * 2 * np.pi * 40  # the outline is drawn (most of it) ...
    assert not edges[distance > 8].any()  # ... and nothing else


def test_detect_takes_the_extensions_defaults_and_old_module_names(client):
    picture = b64(ring_picture())
    # -1 means the preprocessor's default; "invert" is the extension's internal name.
    inverted = client.post(
        "/controlnet/detect",
        json={"controlnet_module": "invert", "controlnet_input_images": [picture],
              "controlnet_processor_res": -1, "controlnet_threshold_a": -1, "controlnet_threshold_b": -1},
    )  # fmt: skip
    assert inverted.status_code == 200, inverted.text
    image = np.asarray(unb64(inverted.json()["images"][0]))
    assert image[64, 64] < 50 and image[2, 2] > 200  # the white disc became black, the black ground white
    # Out-of-range sliders are brought into range, as the extension does.
    clamped = client.post(
        "/controlnet/detect",
        json={
            "controlnet_module": "canny",
            "controlnet_input_images": [picture],
            "controlnet_threshold_a": 5000,
        },
    )
    assert clamped.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"controlnet_module": "no such module", "controlnet_input_images": ["x"]}, "controlnet_module"),
        ({"controlnet_module": "openpose", "controlnet_input_images": ["x"]}, "controlnet_module"),
        ({"controlnet_module": "canny", "controlnet_input_images": []}, "controlnet_input_images"),
        (
            {"controlnet_module": "canny", "controlnet_input_images": ["bm90IGFuIGltYWdl"]},
            "controlnet_input_images",
        ),
    ],
)
def test_detect_refusals_name_the_field(client, body, field):
    answer = client.post("/controlnet/detect", json=body)
    assert answer.status_code == 422 and field in answer.json()["detail"][0]["loc"]


def test_detect_out_of_memory_is_a_507_and_the_next_detect_works(client, monkeypatch):
    """A preprocessor that runs out of memory (a huge resolution) ends in the clear error, with
    its memory freed; the server answers the next request."""
    from engine.service import control
    from tests.fakes.memory import OOM_TEXT, OutOfMemoryStage

    stage = OutOfMemoryStage()
    released: list[int] = []
    monkeypatch.setattr(control, "release_memory", lambda: released.append(stage.held()))
    body = {"controlnet_module": "canny", "controlnet_input_images": [b64(ring_picture())]}
    with monkeypatch.context() as patch:
        patch.setattr(control, "run_preprocessor", stage)
        answer = client.post("/controlnet/detect", json=body)
    assert answer.status_code == 507
    detail = answer.json()["detail"]
    assert detail.startswith(f"Out of memory during preprocessor ({OOM_TEXT})")
    assert "lower preprocessor resolution" in detail
    assert released == [0]  # freed once nothing held the failed run's tensors
    assert client.post("/controlnet/detect", json=body).status_code == 200
