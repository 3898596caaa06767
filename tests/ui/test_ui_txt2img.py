"""txt2img handlers: UI values → GenerationParams, jobs → progress/images, errors → messages."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from engine.schema.params import GenerationParams
from engine.service.jobs import JobInterrupted
from tests.fakes.fake_engine import FakeEngine
from tests.fakes.ui_values import TXT2IMG_VALUES as VALUES
from ui.common import error_message
from ui.handlers.progress import SessionJobs, format_eta, progress_html
from ui.handlers.txt2img import (
    GenInfo,
    build_params,
    interrupt_job,
    reuse_seed,
    run_txt2img,
    select_image,
)

# prompt, negative, sampler, schedule, steps, cfg, seed, width, height, batch count, batch size


def _values(**changes: object) -> tuple:
    names = (
        "prompt",
        "negative_prompt",
        "sampler_name",
        "scheduler",
        "steps",
        "cfg_scale",
        "seed",
        "width",
        "height",
        "n_iter",
        "batch_size",
    )
    return tuple(changes.get(name, value) for name, value in zip(names, VALUES, strict=True))


def test_build_params_turns_gradio_floats_into_the_schema_types():
    params = build_params(*VALUES)
    assert isinstance(params, GenerationParams)
    assert (params.steps, params.seed, params.width, params.batch_size) == (4, 42, 128, 2)
    assert isinstance(params.steps, int) and params.cfg_scale == 7.5
    assert params.negative_prompt == "blurry"


def test_build_params_applies_override_entries_and_rejects_unknown_ones():
    params = build_params(*VALUES, ["Eta DDIM: 0.3", "UniPC order: 2", "Schedule rho: 5"])
    assert (params.eta_ddim, params.uni_pc_order, params.rho) == (0.3, 2, 5.0)
    assert params.eta_ancestral is None  # not overridden: the Sampler settings tab decides
    assert build_params(*VALUES, ["Clip skip: 2"]).CLIP_stop_at_last_layers == 2
    with pytest.raises(ValueError, match="unknown override 'Hypernet strength: 2'"):
        build_params(*VALUES, ["Hypernet strength: 2"])
    with pytest.raises(ValidationError):  # a known key with a value out of range
        build_params(*VALUES, ["Eta: 7"])


def test_a_bad_override_is_a_message_not_a_crash():
    engine = FakeEngine()
    updates = list(run_txt2img(engine, SessionJobs(), "s", (*VALUES, ["Eta: lots"]), poll_seconds=0.01))
    assert len(updates) == 1 and not updates[0].running
    assert "Eta" in updates[0].message or "eta_ancestral" in updates[0].message


def test_build_params_accepts_legacy_sampler_names():
    params = build_params(*_values(sampler_name="DPM++ 2M Karras"))
    assert (params.sampler_name, params.scheduler) == ("DPM++ 2M", "Karras")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"width": 130.0}, "width: must be a multiple of 8"),
        ({"steps": 0.0}, "steps: must be greater than or equal to 1"),
        ({"steps": 2.5}, "steps: must be a valid integer"),
        ({"sampler_name": "Nope"}, "unknown sampler 'Nope'"),
        ({"seed": None, "height": 4096.0}, "height: must be less than or equal to 2048"),
    ],
)
def test_invalid_values_become_readable_messages(changes, expected):
    with pytest.raises(ValidationError) as caught:
        build_params(*_values(**changes))
    message = error_message(caught.value)
    assert expected in message
    assert "Traceback" not in message and "pydantic" not in message


def test_error_message_for_plain_errors():
    assert error_message(ValueError("no checkpoint named 'x'")) == "no checkpoint named 'x'"
    assert error_message(RuntimeError("CUDA out of memory")) == "RuntimeError: CUDA out of memory"


def _collect(engine: FakeEngine, values: tuple, session: str = "s") -> list:
    return list(run_txt2img(engine, SessionJobs(), session, values, poll_seconds=0.01))


def test_run_reports_progress_then_images_with_infotext():
    engine = FakeEngine(step_seconds=0.02)
    updates = _collect(engine, VALUES)
    assert updates[0].running and "Waiting" in updates[0].progress
    assert any("Step" in u.progress and "ETA" in u.progress for u in updates[1:-1])
    final = updates[-1]
    assert not final.running and final.message is None
    assert final.info.seeds == [42, 43]
    assert len(final.images) == 2
    # The gallery's PNGs carry the parameters text, so PNG Info can read a downloaded image.
    assert "Seed: 42" in final.images[0].info["parameters"]
    assert engine.submitted[0].steps == 4


def test_run_shows_previews_while_sampling():
    updates = _collect(FakeEngine(step_seconds=0.03), _values(steps=6.0))
    assert any(u.preview is not None for u in updates if u.running)


def test_invalid_values_are_a_message_and_submit_nothing():
    engine = FakeEngine()
    updates = _collect(engine, _values(width=100.0))
    assert len(updates) == 1
    assert updates[0].message == "width: must be a multiple of 8" and not updates[0].running
    assert engine.submitted == []


def test_a_failing_job_is_a_message_not_a_crash(monkeypatch):
    engine = FakeEngine()

    def broken(params, *, job):
        raise ValueError("the model could not be loaded: file is truncated")

    monkeypatch.setattr(engine, "_run", broken)
    final = _collect(engine, VALUES)[-1]
    assert final.message == "the model could not be loaded: file is truncated"
    # The engine keeps working after a failed job.
    monkeypatch.undo()
    assert _collect(engine, VALUES)[-1].images


def test_interrupt_stops_the_sessions_job_and_keeps_finished_images():
    engine, jobs = FakeEngine(step_seconds=0.05), SessionJobs()
    assert interrupt_job(jobs, "s") is False  # nothing running yet
    updates = []
    for update in run_txt2img(engine, jobs, "s", _values(steps=100.0), poll_seconds=0.01):
        updates.append(update)
        if len(updates) == 3:
            assert interrupt_job(jobs, "other") is False  # another session's buttons do nothing here
            assert interrupt_job(jobs, "s") is True
    final = updates[-1]
    assert not final.running
    assert any("Interrupted" in note for note in final.info.notes)
    assert jobs.get("s") is None


def test_skip_moves_on_to_the_next_batch():
    engine, jobs = FakeEngine(step_seconds=0.03), SessionJobs()
    updates = []
    for update in run_txt2img(
        engine, jobs, "s", _values(steps=20.0, n_iter=2.0, batch_size=1.0), poll_seconds=0.01
    ):
        updates.append(update)
        if len(updates) == 3:
            interrupt_job(jobs, "s", skip=True)
    assert len(updates[-1].images) == 1  # first batch skipped, second one finished


def test_closing_the_generator_interrupts_the_job():
    engine, jobs = FakeEngine(step_seconds=0.05), SessionJobs()
    run = run_txt2img(engine, jobs, "s", _values(steps=100.0), poll_seconds=0.01)
    next(run)
    job = jobs.get("s")
    run.close()  # what Gradio does when the browser tab goes away
    assert job.wait(5)
    # Stopped mid-sampling (a result marked interrupted) or before the worker picked it up.
    assert isinstance(job.error, JobInterrupted) or job.result.interrupted


def test_interrupting_a_queued_job_is_a_note_not_an_error():
    engine, jobs = FakeEngine(step_seconds=0.05), SessionJobs()
    blocker = engine.submit_txt2img(build_params(*_values(steps=20.0)))  # occupies the worker
    updates = []
    for update in run_txt2img(engine, jobs, "s", VALUES, poll_seconds=0.01):
        updates.append(update)
        if len(updates) == 2:
            interrupt_job(jobs, "s")
    blocker.interrupt()
    assert updates[-1].message is None
    assert updates[-1].info.notes == ["Interrupted before it started."]


def test_reuse_seed_and_selection():
    info = GenInfo(infotexts=["a\nSeed: 5", "b\nSeed: 6"], seeds=[5, 6])
    assert reuse_seed(info, -1) == 5
    info, html_text = select_image(info, 1)
    assert reuse_seed(info, -1) == 6
    assert "Seed: 6" in html_text
    assert reuse_seed(GenInfo(), 123) == 123


def test_progress_html():
    class P:
        job_step, job_steps, batch, batches, fraction, eta_seconds = 5, 20, 1, 2, 0.25, 75.0

    text = progress_html(P())
    assert "Step 5/20" in text and "batch 2/2" in text and "ETA 1m 15s" in text and "width:25.0%" in text
    assert "Waiting" in progress_html(None, started=False)
    assert format_eta(None) == "…" and format_eta(3.4) == "3s"
    assert "In queue: 2 jobs ahead" in progress_html(None, position=2)


def test_a_waiting_job_knows_its_place_in_the_shared_queue():
    import threading

    from engine.service.jobs import Job, JobQueue

    queue, gate = JobQueue(), threading.Event()
    running = queue.submit(Job(), lambda *, job: gate.wait(5))
    waiting = [queue.submit(Job(), lambda *, job: None) for _ in range(2)]
    while queue.current is not running:
        threading.Event().wait(0.01)
    assert [running.position(), *(j.position() for j in waiting)] == [0, 1, 2] and queue.pending() == 2
    waiting[0].interrupt()  # cancelled while waiting: it never runs, the next one does
    gate.set()
    assert waiting[1].wait(5) and waiting[1].error is None
    assert waiting[0].error is not None and type(waiting[0].error).__name__ == "JobInterrupted"


def test_session_jobs_clear_keeps_a_newer_job():
    jobs, old, new = SessionJobs(), object(), object()
    jobs.set("s", old)
    jobs.set("s", new)
    jobs.clear("s", old)
    assert jobs.get("s") is new


def test_concurrent_sessions_each_get_their_own_images():
    engine = FakeEngine(step_seconds=0.01)
    jobs = SessionJobs()
    results: dict[str, list] = {}

    def run(session: str, seed: float) -> None:
        results[session] = list(
            run_txt2img(engine, jobs, session, _values(seed=seed, batch_size=1.0), poll_seconds=0.01)
        )

    threads = [threading.Thread(target=run, args=(f"s{i}", float(i * 10))) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {s: r[-1].info.seeds for s, r in results.items()} == {"s0": [0], "s1": [10], "s2": [20]}
