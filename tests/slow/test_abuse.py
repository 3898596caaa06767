"""The fault and abuse suite: what a hostile client or a malicious web page can send to
`launch.py --api`, each with the answer it must get, against a real server. Afterwards the server
must still serve and nothing under its data folder (outputs, settings, extensions) may have
changed. This is the one place to extend: a new route or name field gets its rows in HOSTILE.

Also here: the Host and Origin checks on the page, Gradio's event routes and the API (DNS
rebinding, cross-site requests), the protective headers, `--listen --allowed-hosts`, and NaN /
±Infinity in every number field of txt2img, img2img and the Upscaling routes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from PIL import Image

from api.models import ExtrasBatchRequest, ExtrasSingleRequest, Img2ImgRequest, Txt2ImgRequest
from api.web_guard import PROTECTIVE_HEADERS
from tests.fakes.server_process import running_server, write_test_controlnet

pytestmark = pytest.mark.slow  # real server processes

API = "/sdapi/v1"
FOREIGN = "rebind.example.invalid"
EVIL_ORIGIN = "http://evil.example"


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def png_bomb(width: int = 60000, height: int = 60000) -> str:
    """A tiny PNG whose header claims width × height pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\0" * (1 + width // 8) * 8, 9)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    return base64.b64encode(data).decode()


PICTURE = b64_png(Image.new("RGB", (64, 64), "red"))
TRUNCATED = b64_png(Image.effect_noise((64, 64), 64).convert("RGB"))[:2000]  # cut mid-way
NOT_AN_IMAGE = base64.b64encode(b"GIF89a but not really" * 10).decode()
BOMB = png_bomb()
SSRF = (
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:22/",
    "file:///etc/passwd",
    "gopher://x/",
)
TRAVERSAL = "../../../../etc/passwd"


def small(**changes: Any) -> dict[str, Any]:
    return {"prompt": "a red circle", "steps": 1, "width": 64, "height": 64, "seed": 1, **changes}


def unit(**changes: Any) -> dict[str, Any]:
    return {"alwayson_scripts": {"controlnet": {"args": [{"module": "canny", "model": "abuse-canny",
                                                          "image": PICTURE, **changes}]}}}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get (`says`: text the answer must contain)."""

    name: str
    path: str
    body: Any = None  # JSON, or bytes sent as they are
    status: int | tuple[int, ...] = 422
    says: str = ""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


TXT, IMG, OPTIONS = API + "/txt2img", API + "/img2img", API + "/options"
EXTRAS, PNG_INFO, DETECT = API + "/extra-single-image", API + "/png-info", "/controlnet/detect"
JOIN, FILE = "/gradio_api/queue/join", "/gradio_api/file="
GET = {"method": "GET"}
FROM_A_STRANGER = {"headers": {"Host": FOREIGN}, "status": 403}
FROM_A_PAGE = {"headers": {"Origin": EVIL_ORIGIN}, "status": 403}


def detect(*images: str, module: str = "canny") -> dict[str, Any]:
    return {"controlnet_module": module, "controlnet_input_images": list(images)}


# fmt: off
HOSTILE: list[Case] = [
    # -- DNS rebinding and cross-site requests (a page the user merely visits) -----------------------
    Case("foreign host: page", "/", **GET, **FROM_A_STRANGER, says=FOREIGN),
    Case("foreign host: API", TXT, small(), **FROM_A_STRANGER),
    Case("foreign host: Gradio event", JOIN, {}, **FROM_A_STRANGER),
    Case("foreign host: Gradio file", FILE + "/etc/passwd", **GET, **FROM_A_STRANGER),
    Case("foreign host: docs", "/openapi.json", **GET, **FROM_A_STRANGER),
    Case("foreign origin: options", OPTIONS, {"eta_noise_seed_delta": 5}, **FROM_A_PAGE, says="cross-site"),
    Case("foreign origin: txt2img", TXT, small(), **FROM_A_PAGE),
    Case("foreign origin: interrupt", API + "/interrupt", **FROM_A_PAGE),
    Case("foreign origin: Gradio event", JOIN, {}, **FROM_A_PAGE),
    Case("null origin", TXT, small(), headers={"Origin": "null"}, status=403),
    # -- numbers that are not numbers ----------------------------------------------------------------
    Case("NaN seed", TXT, b'{"prompt": "x", "seed": NaN}', says="seed"),
    Case("Infinity in script args", TXT,
         b'{"prompt": "x", "alwayson_scripts": {"CFG rescale": {"args": [true, Infinity]}}}', says="args"),
    Case("NaN option", OPTIONS, b'{"eta_ddim": NaN}', says="eta_ddim"),
    Case("NaN ControlNet weight", TXT, json.dumps(small(**unit(weight=1.5))).replace("1.5", "NaN").encode(),
         says="weight"),
    Case("-Infinity detect threshold", DETECT, b'{"controlnet_module": "canny", "controlnet_threshold_a": '
         b"-Infinity}", says="controlnet_threshold_a"),
    # -- path traversal in every name field ----------------------------------------------------------
    Case("sampler", TXT, small(sampler_name=TRAVERSAL), says="sampler_name"),
    Case("schedule type", TXT, small(scheduler=TRAVERSAL), says="scheduler"),
    Case("hires sampler", TXT, small(enable_hr=True, hr_sampler_name=TRAVERSAL), says="hr_sampler_name"),
    Case("hires schedule", TXT, small(enable_hr=True, hr_scheduler=TRAVERSAL), says="hr_scheduler"),
    Case("hires upscaler", TXT, small(enable_hr=True, hr_upscaler=TRAVERSAL), says="hr_upscaler"),
    Case("style", TXT, small(styles=[TRAVERSAL]), status=400, says="unknown style"),
    Case("checkpoint", TXT, small(override_settings={"sd_model_checkpoint": TRAVERSAL}), status=404,
         says="checkpoint not found"),
    Case("VAE", TXT, small(override_settings={"sd_vae": TRAVERSAL}), status=404, says="VAE not found"),
    Case("setting key", TXT, small(override_settings={TRAVERSAL: 1}), says="unknown setting"),
    Case("script", TXT, small(script_name=TRAVERSAL), says="script_name"),
    Case("extension panel", TXT, small(alwayson_scripts={TRAVERSAL: {"args": []}}), says="alwayson_scripts"),
    Case("ControlNet model", TXT, small(**unit(model=TRAVERSAL)), status=(400, 422), says="not found"),
    Case("ControlNet module", TXT, small(**unit(module=TRAVERSAL)), status=(400, 422), says="preprocessor"),
    Case("upscaler 1", EXTRAS, {"image": PICTURE, "upscaler_1": TRAVERSAL}, says="upscaler_1"),
    Case("upscaler 2", EXTRAS, {"image": PICTURE, "upscaler_2": TRAVERSAL}, says="upscaler_2"),
    Case("options: checkpoint", OPTIONS, {"sd_model_checkpoint": TRAVERSAL}, status=404),
    Case("options: output folder", OPTIONS, {"outdir_txt2img_samples": "/tmp/elsewhere"}, status=403),
    Case("options: unknown key", OPTIONS, {TRAVERSAL: 1}, says="unknown option"),
    Case("detect module", DETECT, detect(PICTURE, module=TRAVERSAL), says="controlnet_module"),
    Case("Gradio file: absolute", FILE + "/etc/passwd", **GET, status=(403, 404)),
    Case("Gradio file: relative", FILE + TRAVERSAL, **GET, status=(403, 404)),
    Case("Gradio file: settings", FILE + "config.json", **GET, status=(403, 404)),
    # -- pictures: URLs the server must not fetch, bombs, malformed data -----------------------------
    *(Case(f"SSRF init image {url}", IMG, small(init_images=[url]), says="init_images") for url in SSRF),
    Case("SSRF ControlNet image", TXT, small(**unit(image=SSRF[0])), says="image"),
    Case("SSRF extras", EXTRAS, {"image": SSRF[0]}, says="image"),
    Case("SSRF png-info", PNG_INFO, {"image": SSRF[0]}, says="image"),
    Case("SSRF detect", DETECT, detect(SSRF[0]), says="controlnet_input_images"),
    Case("bomb: init image", IMG, small(init_images=[BOMB]), says="limit"),
    Case("bomb: mask", IMG, small(init_images=[PICTURE], mask=BOMB), says="mask"),
    Case("bomb: extras", EXTRAS, {"image": BOMB}, says="limit"),
    Case("bomb: extras batch", API + "/extra-batch-images", {"imageList": [{"data": BOMB}]}, says="limit"),
    Case("bomb: png-info", PNG_INFO, {"image": BOMB}, says="limit"),
    Case("bomb: ControlNet", TXT, small(**unit(image=BOMB)), says="limit"),
    Case("bomb: detect", DETECT, detect(BOMB), says="limit"),
    Case("truncated picture", IMG, small(init_images=[TRUNCATED]), says="init_images"),
    Case("not a picture", IMG, small(init_images=[NOT_AN_IMAGE]), says="init_images"),
    Case("empty picture", IMG, small(init_images=[""]), says="init_images"),
    Case("picture of the wrong type", IMG, small(init_images=[123]), says="init_images"),
    Case("no picture", IMG, small(init_images=[]), says="init_images"),
    # -- sizes, shapes and nesting -------------------------------------------------------------------
    Case("huge prompt", TXT, small(prompt="a red circle, " * 100_000), says="prompt"),
    Case("huge negative prompt", TXT, small(negative_prompt="x" * 100_001), says="negative_prompt"),
    Case("thousands of styles", TXT, small(styles=["s"] * 5000), says="styles"),
    Case("huge picture size", TXT, small(width=100_000, height=100_000), says="width"),
    Case("huge batch", TXT, small(batch_size=10_000), says="batch_size"),
    Case("huge step count", TXT, small(steps=10**9), says="steps"),
    Case("huge extras scale", EXTRAS, {"image": PICTURE, "upscaling_resize": 1000}, says="upscaling_resize"),
    Case("seed out of range", TXT, small(seed=2**70), says="seed"),
    Case("malformed JSON", TXT, b"{not json"),
    Case("JSON nested 100 000 deep", TXT, b"[" * 100_000 + b"]" * 100_000, status=(400, 422)),
    Case("a list instead of an object", TXT, [1, 2, 3]),
    Case("wrong type", TXT, small(steps="many"), says="steps"),
    Case("unknown route", API + "/../../etc/passwd", **GET, status=404),
    Case("wrong method", TXT, **GET, status=(404, 405)),
]

# Hostile prompts whose right answer is a picture: the prompt parser must take them in its stride
# (no recursion error, no blow-up), and the server answers as for any prompt. Round brackets 9000
# deep make a weight of 1.1^9000, past float range: a clear 400 (A1111 fails such a job with its
# NaN check), not a black picture.
DRAWN: list[Case] = [
    Case("nested brackets", TXT, small(prompt="(" * 9000 + "x" + ")" * 9000),
         status=400, says="prompt weight is beyond"),
    Case("nested square brackets", TXT, small(prompt="[" * 9000 + "x" + "]" * 9000), status=200),
    Case("unbalanced brackets", TXT, small(prompt="((((x:1.5" + "]" * 5000), status=200),
    Case("prompt editing nest", TXT, small(prompt="[a:" * 2000 + "b" + ":0.5]" * 2000), status=200),
    Case("alternation nest", TXT, small(prompt="[a|" * 3000 + "b" + "]" * 3000), status=200),
    Case("a LoRA outside the folder", TXT, small(prompt=f"x <lora:{TRAVERSAL}:1>"), status=200),
    Case("an embedding outside the folder", TXT, small(prompt=f"embedding:{TRAVERSAL}"), status=200),
]
# fmt: on


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the server's log) with the hash of its contents."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "server.log"
    }


def send(client: httpx.Client, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    if isinstance(case.body, bytes):
        headers.setdefault("content-type", "application/json")
        return client.request(case.method, case.path, content=case.body, headers=headers)
    return client.request(case.method, case.path, json=case.body, headers=headers)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("abuse-data")
    write_test_controlnet(data / "ControlNet" / "abuse-canny")
    source = data.parent / "abuse-extension-source"
    source.mkdir(exist_ok=True)
    (source / "extension.toml").write_text('name = "abuse-probe"\nversion = "0.1.0"\n')
    (source / "main.py").write_text("def setup(ext):\n    pass\n")
    with running_server(data, ["--api"], ready_path=API + "/samplers") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=600) as c:
        yield c


def test_hostile_requests_get_their_4xx_and_change_nothing(server, client):
    kept = client.post(API + "/txt2img", json=small(save_images=True))  # a picture the server must keep
    assert kept.status_code == 200, kept.text
    before = snapshot(server.data_dir)
    assert any(name.startswith("outputs") for name in before)
    wrong = []
    for case in [*HOSTILE, *DRAWN]:
        answer = send(client, case)
        expected = case.status if isinstance(case.status, tuple) else (case.status,)
        body = answer.text
        if answer.status_code not in expected or case.says not in body:
            wrong.append(f"{case.name}: {answer.status_code} {body[:300]}")
        elif answer.status_code >= 400:
            assert answer.headers["content-type"].startswith("application/json"), case.name
            answer.json()  # every refusal is JSON, even one quoting NaN
    assert not wrong, "\n".join(wrong)
    assert client.get(API + "/samplers").status_code == 200  # still serving
    assert client.post(API + "/txt2img", json=small()).status_code == 200  # and still generating
    assert snapshot(server.data_dir) == before, "a hostile request changed a file"


def float_fields(model: type) -> list[str]:
    return [
        n for n, info in model.model_fields.items() if float in (info.annotation, *get_args(info.annotation))
    ]


FLOAT_FIELDS = {
    "/txt2img": float_fields(Txt2ImgRequest),
    "/img2img": float_fields(Img2ImgRequest),
    "/extra-single-image": float_fields(ExtrasSingleRequest),
    "/extra-batch-images": float_fields(ExtrasBatchRequest),
}
BASES = {
    "/txt2img": small(),
    "/img2img": small(init_images=[PICTURE]),
    "/extra-single-image": {"image": PICTURE},
    "/extra-batch-images": {"imageList": [{"data": PICTURE}]},
}


@pytest.mark.parametrize(("route", "name"), [(r, n) for r, names in FLOAT_FIELDS.items() for n in names])
def test_nan_and_infinity_in_every_float_field_are_a_422_naming_it(client, route, name):
    for token in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps({**BASES[route], name: 0.5})
        body = body.replace(f'"{name}": 0.5', f'"{name}": {token}')
        answer = client.post(API + route, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 422, (token, answer.text)
        assert answer.json()["detail"][0]["loc"][-1] == name


def test_every_float_field_is_covered():
    # The lists above are derived from the request models; make sure they found the fields.
    assert {"cfg_scale", "subseed_strength", "hr_scale", "denoising_strength", "s_noise"} <= set(
        FLOAT_FIELDS["/txt2img"]
    )
    assert "initial_noise_multiplier" in FLOAT_FIELDS["/img2img"]
    assert {"upscaling_resize", "extras_upscaler_2_visibility"} <= set(FLOAT_FIELDS["/extra-single-image"])


def test_protective_headers_on_the_page_the_api_and_errors(client):
    for answer in (
        client.get("/"),
        client.get(API + "/samplers"),
        client.post(API + "/txt2img", json=small(steps="many")),
        client.get("/no/such/page"),
        client.get("/controlnet/version"),
    ):
        for name, value in PROTECTIVE_HEADERS:
            assert answer.headers.get(name.decode()) == value.decode(), (answer.url, name)


def gradio_event(client: httpx.Client, button_elem_id: str) -> tuple[int, int]:
    """(event id, trigger id) of the click event of the button with `button_elem_id`."""
    config = client.get("/config").json()
    button = next(
        c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == button_elem_id
    )
    event = next(
        d["id"] for d in config["dependencies"] if [button, "click"] in [list(t) for t in d["targets"]]
    )
    return event, button


def run_event(
    client: httpx.Client, event: int, trigger: int, data: list, headers: dict
) -> httpx.Response | list:
    """Send a page event as the browser does; the join answer when refused, else the outputs."""
    session = uuid.uuid4().hex[:12]
    body = {
        "data": data,
        "event_data": None,
        "fn_index": event,
        "trigger_id": trigger,
        "session_hash": session,
    }
    joined = client.post("/gradio_api/queue/join", json=body, headers=headers)
    if joined.status_code != 200:
        return joined
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}", headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message["output"]["data"]
    raise AssertionError("the event never completed")


def test_the_extensions_tab_cannot_install_from_a_foreign_origin(server, client):
    event, trigger = gradio_event(client, "extensions_install_button")
    source = str(server.data_dir.parent / "abuse-extension-source")
    target = server.data_dir / "extensions" / "abuse-probe"
    for origin in (EVIL_ORIGIN, "null", f"http://{FOREIGN}"):
        refused = run_event(client, event, trigger, [source, "abuse-probe"], {"Origin": origin})
        assert isinstance(refused, httpx.Response) and refused.status_code == 403
    refused = run_event(client, event, trigger, [source, "abuse-probe"], {"Host": FOREIGN})
    assert isinstance(refused, httpx.Response) and refused.status_code == 403
    assert not target.exists()
    # The page itself (same origin) may: the check refuses strangers, not the user.
    outputs = run_event(client, event, trigger, [source, "abuse-probe"], {"Origin": server.url})
    assert isinstance(outputs, list) and target.is_dir() and "abuse-probe" in json.dumps(outputs)


def test_every_route_answers_from_the_first_moment_the_page_does(tmp_path):
    """The API is part of the app before the port opens: no 404 window after start-up."""
    with running_server(tmp_path, ["--api"], ready_path="/") as fresh:
        started = time.monotonic()
        answer = httpx.post(fresh.url + API + "/txt2img", json=small(), timeout=600)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 600


def test_listen_with_allowed_hosts(tmp_path):
    args = ["--api", "--listen", "--allowed-hosts", "studio.lan"]
    with running_server(tmp_path, args, ready_path=API + "/samplers") as listening:
        with httpx.Client(base_url=listening.url, timeout=60) as c:
            port = listening.url.rsplit(":", 1)[1]
            for host in (f"studio.lan:{port}", "studio.lan", f"127.0.0.1:{port}", f"192.168.7.7:{port}"):
                assert c.get("/", headers={"Host": host}).status_code == 200, host
                assert c.get(API + "/samplers", headers={"Host": host}).status_code == 200, host
            answer = c.post(API + "/txt2img", json=small(), headers={"Host": f"studio.lan:{port}"})
            assert answer.status_code == 200, answer.text
            for host in (FOREIGN, "studio.lan.evil.example", "evil.lan"):
                assert c.get("/", headers={"Host": host}).status_code == 403, host
            # A page served under the allowed name may use the API it was served with.
            ok = c.post(
                API + "/txt2img", json=small(), headers={"Origin": "http://studio.lan", "Host": "studio.lan"}
            )
            assert ok.status_code == 200
            assert c.post(API + "/interrupt", headers={"Origin": EVIL_ORIGIN}).status_code == 403


def test_a_busy_port_is_a_clear_error(tmp_path):
    import socket
    import subprocess
    import sys

    from tests.fakes.server_process import REPO_ROOT

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, str(REPO_ROOT / "launch.py"), "--skip-install", "--port", str(port),
                   "--data-dir", str(tmp_path)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"could not listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
