"""Switching the checkpoint while a job runs. The load is a job of its own in the one queue, so it
waits for the running job and those queued before it, and at no moment are two models in memory:
the quick-settings dropdown says it waits, Engine.load_checkpoint and the API's options call return
once the model is loaded, and a failed load reports its error with the previous model loaded again.
Tiny models on the CPU; the running job is held at its first step until the test releases it."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.models import loaders
from engine.service.jobs import Job
from tests.fakes.tiny_models import tiny_params, write_single_file
from ui.widgets.quicksettings import change_checkpoint

OPTIONS = "/sdapi/v1/options"
WAIT = 120  # seconds: a bound for a hang, never reached when the code works


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_parts, tiny_parts_b) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    write_single_file(tiny_parts, folder / "tiny-a.safetensors")
    write_single_file(tiny_parts_b, folder / "tiny-b.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\xff" * 64)  # no valid safetensors header
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory, checkpoints):
    from engine.service.facade import Engine

    data = tmp_path_factory.mktemp("switch")
    return Engine(data_dir=data, models_dirs=[checkpoints], device="cpu", load_extensions=False)


@pytest.fixture(scope="module")
def client(engine) -> Iterator[TestClient]:
    from engine.cmd_args import parse_args
    from ui.server import build_app

    app = build_app(engine, parse_args(["--api", "--data-dir", str(engine.data_dir)]))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Lets a held job go on; set at the end of every test, so a failing one never leaves it held."""
    event = threading.Event()
    yield event
    event.set()


class LoadSpy:
    """Stands in for the checkpoint loader: records each load, which job the queue was running at
    that moment, and how many models loaded before (the one loaded when the spy was made
    included) were still in memory when it started."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.loads: list[str] = []
        self.running: list[str | None] = []
        self.alive_at_load: list[int] = []
        self._unets = [weakref.ref(engine.models.current.unet)]
        self._load = loaders.load_checkpoint

    def __call__(self, info: Any, *args: Any, **kwargs: Any) -> Any:
        gc.collect()  # only what is still referenced counts as loaded
        self.alive_at_load.append(sum(ref() is not None for ref in self._unets))
        current = self.engine.queue.current
        self.running.append(current.kind if current is not None else None)
        self.loads.append(info.name)
        model = self._load(info, *args, **kwargs)
        self._unets.append(weakref.ref(model.unet))
        return model


def spy_on_loads(engine: Any, monkeypatch: pytest.MonkeyPatch, loaded: str = "tiny-a") -> LoadSpy:
    """`loaded` loaded (through the queue, as any caller does), then every later load recorded."""
    engine.load_checkpoint(loaded)
    assert engine.models.current.info.name == loaded
    spy = LoadSpy(engine)
    monkeypatch.setattr(loaders, "load_checkpoint", spy)  # the manager imports it at each load
    return spy


def hold_txt2img_jobs(monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> threading.Event:
    """Every txt2img job stops before its first step until `release` is set; returns the event
    that says one has got there (its model is loaded and in use)."""
    started = threading.Event()
    check = Job.check

    def held_check(job: Job) -> None:
        if job.kind == "txt2img":
            started.set()
            release.wait(WAIT)
        check(job)

    monkeypatch.setattr(Job, "check", held_check)
    return started


def running_txt2img(engine: Any, monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> Job:
    started = hold_txt2img_jobs(monkeypatch, release)
    job = engine.submit_txt2img(tiny_params(steps=2), save_images=False)
    assert started.wait(WAIT), "the job never started"
    return job


def in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `call()` in a thread, as a second browser tab or client would; its answer lands in the list."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def still_waiting(thread: threading.Thread) -> bool:
    thread.join(0.5)  # time enough for a load that ignored the running job to begin
    return thread.is_alive()


def made_with(job: Job) -> str:
    assert job.wait(WAIT) and job.error is None, job.error
    return job.result.infotexts[0]


def test_a_checkpoint_chosen_while_a_job_runs_loads_after_it(engine, monkeypatch, release):
    spy = spy_on_loads(engine, monkeypatch)
    job = running_txt2img(engine, monkeypatch, release)
    messages: list[str] = []
    thread, answers = in_thread(lambda: change_checkpoint(engine, "tiny-b", messages.append))

    assert still_waiting(thread)
    assert messages == ["Loading tiny-b after the running job…"]
    assert spy.loads == [] and engine.models.current.info.name == "tiny-a"
    assert engine.queue.current is job and engine.queue.pending() == 1  # the load waits its turn

    release.set()  # no interrupt: the job ends on its own, then the load runs
    thread.join(WAIT)
    assert answers == [("tiny-b", None)]
    assert "Model: tiny-a" in made_with(job)
    assert spy.loads == ["tiny-b"] and spy.running == ["load"]
    assert spy.alive_at_load == [0]  # the old model was gone before the new one was read
    assert engine.models.current.info.name == "tiny-b"


def test_a_load_waits_for_every_job_queued_before_it(engine, monkeypatch, release):
    spy = spy_on_loads(engine, monkeypatch)
    first = running_txt2img(engine, monkeypatch, release)
    second = engine.submit_txt2img(tiny_params(steps=2, seed=7), save_images=False)
    thread, answers = in_thread(lambda: engine.load_checkpoint("tiny-b"))

    assert still_waiting(thread)
    assert spy.loads == [] and engine.queue.pending() == 2

    release.set()
    thread.join(WAIT)
    assert answers == [None] and engine.models.current.info.name == "tiny-b"
    assert "Model: tiny-a" in made_with(first) and "Model: tiny-a" in made_with(second)
    assert spy.loads == ["tiny-b"] and spy.running == ["load"] and spy.alive_at_load == [0]


def test_the_options_call_answers_once_the_model_is_loaded_after_the_running_job(
    engine, client, monkeypatch, release
):
    spy = spy_on_loads(engine, monkeypatch)
    job = running_txt2img(engine, monkeypatch, release)
    thread, answers = in_thread(lambda: client.post(OPTIONS, json={"sd_model_checkpoint": "tiny-b"}))

    assert still_waiting(thread)
    assert spy.loads == [] and engine.models.current.info.name == "tiny-a"
    progress = client.get("/sdapi/v1/progress").json()
    assert progress["state"]["job"] == "txt2img" and progress["queue_pending"] == 1

    release.set()
    thread.join(WAIT)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["sd_model_checkpoint"] == "tiny-b"
    assert "Model: tiny-a" in made_with(job)
    assert spy.loads == ["tiny-b"] and spy.running == ["load"] and spy.alive_at_load == [0]


def test_a_failed_load_reports_its_error_and_the_previous_model_stays_usable(engine, client, monkeypatch):
    spy = spy_on_loads(engine, monkeypatch)
    broken = "broken.safetensors is not a valid .safetensors file"

    loaded, message = change_checkpoint(engine, "broken")
    assert loaded == "tiny-a" and message is not None
    assert message.startswith(f"Could not load broken: {broken}")

    answer = client.post(OPTIONS, json={"sd_model_checkpoint": "broken"})
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
    assert broken in answer.json()["detail"]
    assert client.get(OPTIONS).json()["sd_model_checkpoint"] == "tiny-a"

    # Each failed load freed the old model first (one model at a time), then loaded it again.
    assert spy.loads == ["broken", "tiny-a", "broken", "tiny-a"]
    assert spy.alive_at_load == [0, 0, 0, 0] and set(spy.running) == {"load"}
    job = engine.submit_txt2img(tiny_params(steps=2), save_images=False)
    assert "Model: tiny-a" in made_with(job)
    assert len(spy.loads) == 4  # the job used the model loaded again, with no load of its own


def test_a_job_whose_own_checkpoint_fails_to_load_leaves_the_previous_model_loaded(
    engine, client, monkeypatch
):
    """A job's `override_settings` checkpoint that cannot load: the job fails with the file's
    error (a 400 in the API) and the model loaded before is loaded again for the next job."""
    spy = spy_on_loads(engine, monkeypatch)
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "broken"}}  # fmt: skip
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 400 and "broken.safetensors is not a valid" in answer.json()["detail"]
    assert spy.loads == ["broken", "tiny-a"] and engine.models.current.info.name == "tiny-a"
    job = engine.submit_txt2img(tiny_params(steps=2), save_images=False)
    assert "Model: tiny-a" in made_with(job)
    assert len(spy.loads) == 2
