"""A1111's /sdapi/v1 over real HTTP against a running server (launch.py --api --api-auth), with A1111's
field names: every route, generation with sampler + scheduler + hires fix, inpainting with a mask,
png-info on our own PNG, options, progress / interrupt / skip during a job, 20 concurrent requests
served in order, the error shapes, and the credentials."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.fakes.server_process import running_server, write_test_controlnet

pytestmark = pytest.mark.slow  # a real server process

USER, PASSWORD = "alice", "s3cret:with-colon"
SIZE = 64
API = "/sdapi/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("api-data")
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nsunny,"{prompt}, bright",dull\n')
    write_test_controlnet(data / "ControlNet" / "api-canny")
    args = ["--api", "--api-auth", f"bob:pw,{USER}:{PASSWORD}"]
    with running_server(data, args, ready_path=API + "/samplers") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, auth=(USER, PASSWORD), timeout=600) as c:
        yield c


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def small(**kw) -> dict:
    return {"prompt": "a red circle on a blue background", "steps": 3, "width": SIZE, "height": SIZE,
            "seed": 5, "sampler_name": "Euler", **kw}  # fmt: skip


def test_credentials_are_required(server):
    assert httpx.get(server.url + API + "/samplers").status_code == 401
    wrong = httpx.get(server.url + API + "/samplers", auth=(USER, "nope"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Basic"
    assert httpx.get(server.url + API + "/samplers", auth=("bob", "pw")).status_code == 200


def test_listing_routes(client):
    assert "DPM++ 2M" in [s["name"] for s in client.get(API + "/samplers").json()]
    assert "Karras" in [s["name"] for s in client.get(API + "/schedulers").json()]
    models = client.get(API + "/sd-models").json()
    assert any(m["title"] == "atelier-tiny" for m in models) and all("filename" in m for m in models)
    assert client.get(API + "/sd-vae").json() == []
    upscalers = [u["name"] for u in client.get(API + "/upscalers").json()]
    assert {"None", "Lanczos", "Nearest", "atelier-x2"} <= set(upscalers)
    assert "Latent (antialiased)" in [m["name"] for m in client.get(API + "/latent-upscale-modes").json()]
    assert client.get(API + "/loras").json() == []
    assert client.get(API + "/embeddings").json() == {"loaded": {}, "skipped": {}}
    assert client.get(API + "/prompt-styles").json()[0] == {
        "name": "sunny", "prompt": "{prompt}, bright", "negative_prompt": "dull"
    }  # fmt: skip
    flags = client.get(API + "/cmd-flags").json()
    assert flags["api"] is True and flags["api_auth"] == "***"  # a secret is never sent back
    memory = client.get(API + "/memory").json()
    assert memory["ram"]["total"] > memory["ram"]["free"] > 0 and "cuda" in memory
    scripts = client.get(API + "/scripts").json()
    assert "x/y/z plot" in scripts["txt2img"] and "prompts from file or textbox" in scripts["img2img"]
    for route in ("/refresh-checkpoints", "/refresh-loras"):
        assert client.post(API + route).status_code == 200
    assert client.get("/docs").status_code == 200
    assert API + "/txt2img" in client.get("/openapi.json").json()["paths"]


def test_txt2img_with_sampler_scheduler_and_hires_fix(client):
    hires = dict(
        enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.5, hr_upscaler="Latent"
    )
    skips = dict(s_min_uncond=5, override_settings={"s_min_uncond_all": True, "skip_early_cond": 0.1})
    body = small(sampler_name="DPM++ 2M", scheduler="Karras", styles=["sunny"], **hires, **skips)
    answer = client.post(API + "/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    image = unb64(data["images"][0])
    assert image.size == (2 * SIZE, 2 * SIZE)
    info = json.loads(data["info"])
    text = info["infotexts"][0]
    for part in (
        "Sampler: DPM++ 2M",
        "Schedule type: Karras",
        "Hires upscale: 2",
        "Hires steps: 2",
        "Seed: 5",
        "NGMS: 5",
        "NGMS all steps: True",
        "Skip Early CFG: 0.1",
    ):
        assert part in text, text
    assert text.startswith("a red circle on a blue background, bright") and "Negative prompt: dull" in text
    assert image.info["parameters"] == text  # the PNG carries its parameters
    assert data["parameters"]["sampler_name"] == "DPM++ 2M" and info["all_seeds"] == [5]


def test_png_info_reads_our_own_png(client):
    data = client.post(API + "/txt2img", json=small(seed=77)).json()
    answer = client.post(
        API + "/png-info", json={"image": "data:image/png;base64," + data["images"][0]}
    ).json()
    assert "Seed: 77" in answer["info"] and answer["parameters"]["Seed"] == "77"
    assert answer["items"]["parameters"] == answer["info"]


def test_img2img_inpaint_changes_only_the_mask(client):
    picture = Image.new("RGB", (SIZE, SIZE), (30, 60, 200))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    body = small(prompt="a yellow circle", init_images=[b64(picture)], mask=b64(mask), denoising_strength=0.9,
                 inpainting_fill=1, mask_blur=0, steps=6)  # fmt: skip
    answer = client.post(API + "/img2img", json=body)
    assert answer.status_code == 200, answer.text
    out = np.asarray(unb64(answer.json()["images"][0]).convert("RGB"), dtype=np.int16)
    before = np.asarray(picture, dtype=np.int16)
    outside = np.asarray(mask) == 0
    assert np.abs(out - before)[outside].max() <= 1  # the kept area is the original
    assert np.abs(out - before)[~outside].mean() > 20  # the masked area was repainted
    text = json.loads(answer.json()["info"])["infotexts"][0]
    assert "Denoising strength: 0.9" in text  # (mask blur 0 and "original" content: A1111 leaves them out)
    assert answer.json()["parameters"]["init_images"] is None  # not echoed back


def test_img2img_echoes_the_values_it_used_for_what_the_client_left_out(client):
    picture = Image.new("RGB", (SIZE, SIZE), (30, 60, 200))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    body = small(init_images=[b64(picture)], mask=b64(mask), steps=2)  # no inpainting_fill, no mask_blur
    answer = client.post(API + "/img2img", json=body).json()
    text = json.loads(answer["info"])["infotexts"][0]
    used = answer["parameters"]
    # The job ran with the schema's mask blur 4 and "original" content; the echo says so.
    assert (used["mask_blur"], used["inpainting_fill"]) == (4, 1) and "Mask blur: 4" in text
    assert "Masked content" not in text  # A1111 leaves out its default, "original"
    assert used["seed"] == 5 and used["sampler_name"] == "Euler"  # what the client sent stays as sent
    sent = client.post(API + "/img2img", json={**body, "inpainting_fill": 0, "mask_blur": 2}).json()
    assert (sent["parameters"]["inpainting_fill"], sent["parameters"]["mask_blur"]) == (0, 2)
    assert "Masked content: fill" in json.loads(sent["info"])["infotexts"][0]


def test_options_round_trip_and_protected_keys(client):
    options = client.get(API + "/options").json()
    assert options["sd_model_checkpoint"] == "atelier-tiny"
    changed = client.post(API + "/options", json={"show_progress_every_n_steps": 1})
    assert (
        changed.status_code == 200 and client.get(API + "/options").json()["show_progress_every_n_steps"] == 1
    )
    refused = client.post(API + "/options", json={"outdir_txt2img_samples": "/tmp/elsewhere"})
    assert refused.status_code == 403 and "outdir_txt2img_samples" in refused.json()["detail"]
    assert client.post(API + "/options", json={"no_such_option": 1}).status_code == 422
    bad = client.post(API + "/options", json={"default_steps": 1000})
    assert bad.status_code == 422 and "default_steps" in json.dumps(bad.json())
    assert client.post(API + "/options", json={"sd_model_checkpoint": "nope"}).status_code == 404
    assert client.post(API + "/options", json={"sd_model_checkpoint": "atelier-tiny"}).status_code == 200


def test_extras_single_and_batch(client):
    picture = Image.new("RGB", (32, 24), "orange")
    body = {"image": b64(picture), "upscaler_1": "Lanczos", "upscaling_resize": 2}
    single = client.post(API + "/extra-single-image", json=body)
    assert single.status_code == 200, single.text
    assert unb64(single.json()["image"]).size == (64, 48)
    batch = client.post(
        API + "/extra-batch-images",
        json={
            "imageList": [{"data": b64(picture), "name": "a.png"}, {"data": b64(picture), "name": "b.png"}],
            "upscaler_1": "Nearest",
            "upscaling_resize": 3,
        },  # fmt: skip
    )
    assert [unb64(i).size for i in batch.json()["images"]] == [(96, 72), (96, 72)]
    assert client.post(API + "/extra-single-image", json={**body, "upscaler_1": "Nope"}).status_code == 422


def test_scripts_and_controlnet_through_the_api(client):
    xyz = small(
        script_name="x/y/z plot", script_args=["Steps", "2,3", [], "Nothing", "", [], "Nothing", "", []]
    )
    data = client.post(API + "/txt2img", json=xyz).json()
    assert len(data["images"]) == 1 and "X Type: Steps" in json.loads(data["info"])["infotexts"][0]
    control = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(control).rectangle((16, 16, 48, 48), outline="white", width=3)
    unit = {"enabled": True, "module": "canny", "model": "api-canny", "weight": 1.0, "image": b64(control)}
    answer = client.post(API + "/txt2img", json=small(alwayson_scripts={"controlnet": {"args": [unit]}}))
    assert answer.status_code == 200, answer.text
    assert "Module: canny, Model: api-canny" in json.loads(answer.json()["info"])["infotexts"][0]
    rescale = small(cfg_scale=12, alwayson_scripts={"CFG rescale": {"args": [True, 0.5]}})
    assert (
        "CFG Rescale: 0.5"
        in json.loads(client.post(API + "/txt2img", json=rescale).json()["info"])["infotexts"][0]
    )


def test_errors_are_4xx_with_the_field_named(client, server):
    raw = client.post(API + "/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 422
    wrong_type = client.post(API + "/txt2img", json=small(steps="many"))
    assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"][-1] == "steps"
    too_many = client.post(API + "/txt2img", json=small(steps=1000))
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"][-1] == "steps"
    ngms = client.post(API + "/txt2img", json=small(s_min_uncond=-1))
    assert ngms.status_code == 422 and ngms.json()["detail"][0]["loc"][-1] == "s_min_uncond"
    sampler = client.post(API + "/txt2img", json=small(sampler_name="Nope Sampler"))
    assert 400 <= sampler.status_code < 500 and "Nope Sampler" in sampler.text
    model = client.post(API + "/txt2img", json=small(override_settings={"sd_model_checkpoint": "missing"}))
    assert model.status_code == 404 and "checkpoint not found" in model.json()["detail"]
    picture = client.post(API + "/img2img", json=small(init_images=["bm90IGFuIGltYWdl"]))
    assert picture.status_code == 422 and picture.json()["detail"][0]["loc"][-2:] == ["init_images", 0]
    url = client.post(API + "/img2img", json=small(init_images=["http://169.254.169.254/latest"]))
    assert url.status_code == 422 and "--api-allow-image-urls" in url.text
    assert client.get(API + "/samplers").status_code == 200  # the server keeps serving


def test_progress_skip_and_interrupt_during_a_job(client):
    results = {}

    def long_job():
        body = small(steps=100, n_iter=3, seed=9)
        results["answer"] = client.post(API + "/txt2img", json=body)

    client.post(API + "/options", json={"show_progress_every_n_steps": 1})
    worker = threading.Thread(target=long_job)
    worker.start()
    progress = {}
    for _ in range(600):
        progress = client.get(API + "/progress").json()
        if progress["state"]["sampling_step"] >= 2 and progress["current_image"]:
            break
        time.sleep(0.1)
    assert progress["state"]["job"] == "txt2img" and progress["state"]["job_count"] == 3
    assert 0 < progress["progress"] < 1 and progress["eta_relative"] > 0
    assert unb64(progress["current_image"]).size == (SIZE, SIZE)
    assert client.post(API + "/skip").status_code == 200
    for _ in range(600):
        if client.get(API + "/progress").json()["state"]["job_no"] >= 1:
            break
        time.sleep(0.1)
    assert client.get(API + "/progress").json()["state"]["job_no"] >= 1  # skip moved on to the next batch
    assert client.post(API + "/interrupt").status_code == 200
    worker.join(timeout=300)
    info = json.loads(results["answer"].json()["info"])
    assert info["interrupted"] is True and len(info["all_seeds"]) < 3


def test_twenty_concurrent_requests_finish_in_order_with_their_own_parameters(client):
    finished: list[int] = []
    answers: dict[int, dict] = {}
    lock = threading.Lock()
    before = client.get(API + "/memory").json()["ram"]["process_rss"]

    def send(i: int) -> None:
        answer = client.post(
            API + "/txt2img", json=small(prompt=f"a red circle number {i}", seed=100 + i, steps=2)
        )
        with lock:
            finished.append(i)
            answers[i] = answer.json()

    threads = []
    for i in range(20):
        thread = threading.Thread(target=send, args=(i,))
        thread.start()
        threads.append(thread)
        time.sleep(0.15)  # one after another: the queue's order is the order they arrive
    for thread in threads:
        thread.join(timeout=600)
    assert finished == list(range(20))
    for i, answer in answers.items():
        text = json.loads(answer["info"])["infotexts"][0]
        assert text.startswith(f"a red circle number {i}\n") and f"Seed: {100 + i}," in text
    after = client.get(API + "/memory").json()["ram"]["process_rss"]
    assert after - before < 300 * 2**20, (before, after)  # no growth per request kept alive
