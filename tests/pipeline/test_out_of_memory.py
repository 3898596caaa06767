"""Running out of memory in any stage of a job (the UNet, the VAE decode or encode, ControlNet, an
upscaler in Extras or hires fix) ends the job with a message that says what to try; the stage's
memory is freed, the queue goes on and pictures saved before stay as they were. On CUDA a job's
notes give its peak GPU memory (the reading is replaced here, as there is no GPU)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from PIL import Image

from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.pipeline.img2img import Img2ImgInputs
from engine.schema.params import GenerationParams, Img2ImgParams
from engine.schema.settings import Settings
from engine.service import memory
from engine.service.memory import OutOfMemory, out_of_memory
from engine.upscale.extras import ExtrasParams
from tests.fakes.memory import (
    OOM_TEXT,
    OutOfMemoryStage,
    inject_out_of_memory,
    running_out_in,
    saved_files,
)
from ui.common import error_message
from ui.handlers.progress import SessionJobs
from ui.handlers.txt2img import follow_job

PARAMS = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3}
HIRES = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "atelier-x2", "denoising_strength": 0.5}
CANNY = ControlNetUnit(module="canny", model="atelier-tiny-canny")
PICTURE = Image.new("RGB", (32, 32), "teal")
TRY_GENERATION = (
    "Try a smaller size or batch, fewer ControlNet units, a lower hires fix upscale, VAE in strips "
    "(vae_tiling) on auto or always in Settings, or a lighter memory plan (memory_plan) in Settings "
    "or with --medvram / --lowvram; on auto the next job's plan is already one step lighter."
)
TRY_EXTRAS = (
    "Try a smaller picture or upscale factor, or a smaller Upscaler tile size (ESRGAN_tile) in Settings."
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from engine.service.facade import Engine

    return Engine(data_dir=tmp_path_factory.mktemp("oom"), device="cpu", load_extensions=False)


def txt2img(engine, **extra: Any):
    return engine.submit_txt2img(GenerationParams(**PARAMS, **extra))


def controlnet_job(engine):
    return engine.submit_txt2img(GenerationParams(**PARAMS), [ControlInput(CANNY, PICTURE)])


def img2img_job(engine):
    params = Img2ImgParams(**PARAMS, denoising_strength=0.5)
    return engine.submit_img2img(params, Img2ImgInputs([PICTURE.resize((64, 64))]))


def extras_job(engine):
    return engine.submit_extras(ExtrasParams(upscaler_1="atelier-x2"), [PICTURE])


# case → (the stage that runs out, a job that reaches it, what the message must advise)
CASES = {
    "UNet": ("UNet", txt2img, TRY_GENERATION),
    "VAE decode": ("VAE decode", txt2img, TRY_GENERATION),
    "VAE encode": ("VAE encode", img2img_job, TRY_GENERATION),
    "ControlNet": ("ControlNet", controlnet_job, TRY_GENERATION),
    "Extras upscaler": ("upscaler", extras_job, TRY_EXTRAS),
    "hires fix upscaler": ("upscaler", lambda engine: txt2img(engine, **HIRES), TRY_GENERATION),
}


def finished(job):
    assert job.wait(300), "the job never finished"
    return job


@pytest.mark.parametrize("case", CASES)
def test_out_of_memory_ends_the_job_frees_its_memory_and_the_queue_goes_on(engine, monkeypatch, case):
    stage_name, submit, advice = CASES[case]
    first = finished(submit(engine))
    assert first.error is None, first.error  # loads the model and saves pictures
    outputs = engine.data_dir / "outputs"
    before = saved_files(outputs)
    assert before

    with running_out_in(stage_name, engine, monkeypatch) as (stage, release):
        failed = finished(submit(engine))

    error = failed.error
    assert isinstance(error, OutOfMemory) and stage.tensors  # VAE: the whole pass, then its strips
    kind = {extras_job: "extras", img2img_job: "img2img"}.get(submit, "txt2img")
    assert str(error).startswith(f"Out of memory during {kind} ({OOM_TEXT}).")
    assert str(error).endswith(advice)
    # Freed once, and only after nothing held the failed stage's tensors any more.
    assert release.held_at_calls == [0] and stage.held() == 0
    assert error.__cause__ is None and error.__context__ is None  # no traceback kept alive
    assert failed.context is None and engine.queue.current is None
    assert saved_files(outputs) == before

    after = finished(submit(engine))
    assert after.error is None and after.result.images
    assert release.held_at_calls == [0]  # a job that succeeds frees nothing extra


def test_the_generation_tabs_show_the_message_as_it_is(engine, monkeypatch):
    assert finished(txt2img(engine)).error is None
    stage = OutOfMemoryStage()
    with monkeypatch.context() as patch:
        inject_out_of_memory("UNet", engine, patch, stage)
        updates = list(follow_job(SessionJobs(), "session", lambda: txt2img(engine), poll_seconds=0.01))
    last = updates[-1]
    assert last.running is False and last.images is None
    assert last.message.startswith(f"Out of memory during txt2img ({OOM_TEXT}).")
    assert last.message.endswith(TRY_GENERATION) and "OutOfMemory:" not in last.message


def test_the_message_keeps_torchs_first_sentences_and_a_bare_memory_error_reads_well():
    long = (
        f"{OOM_TEXT}. GPU 0 has a total capacity of 7.79 GiB of which 1.20 GiB is free. If reserved "
        "but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    )
    assert str(out_of_memory("img2img", torch.OutOfMemoryError(long))).startswith(
        f"Out of memory during img2img ({OOM_TEXT}). The job stopped"
    )
    bare = out_of_memory("txt2img", MemoryError())
    assert str(bare).startswith("Out of memory during txt2img. The job stopped and its memory was freed")
    assert error_message(bare) == str(bare)


@pytest.mark.parametrize("kind", ["txt2img", "extras"])
def test_the_settings_the_message_names_exist(kind):
    named = re.findall(r"\((\w+)\) ", str(out_of_memory(kind, MemoryError())))
    assert named and set(named) <= set(Settings.model_fields)


def test_a_job_notes_its_peak_gpu_memory_measured_from_its_start(engine, monkeypatch):
    resets: list[Any] = []
    monkeypatch.setattr(memory, "reset_peak_memory", resets.append)
    monkeypatch.setattr(memory, "peak_memory_gib", lambda device: 3.2149)
    generated = finished(txt2img(engine))
    assert generated.result.notes[-1] == "Peak GPU memory: 3.21 GiB"
    upscaled = finished(engine.submit_extras(ExtrasParams(upscaler_1="Lanczos"), [PICTURE]))
    assert upscaled.result.notes[-1] == "Peak GPU memory: 3.21 GiB"
    assert resets == [engine.models.device] * 2


def test_a_cpu_only_run_notes_no_gpu_memory(engine):
    result = finished(txt2img(engine)).result
    assert not any("GPU memory" in note for note in result.notes)
    assert memory.peak_memory_gib(torch.device("cpu")) is None
    assert memory.peak_memory_note(None) is None
