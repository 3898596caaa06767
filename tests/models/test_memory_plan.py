"""The memory plan: which plan a job gets for a table of (free memory, part sizes) cases, the start
flags that force one, and the same pixels under every plan (the pipeline code is shared: under
medvram and lowvram hooks move the parts, here from RAM to RAM)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.models import manager as manager_module
from engine.models.memory_plan import (
    GPU_ONLY,
    LOWVRAM,
    MEDVRAM,
    Footprint,
    MemoryFlags,
    choose_plan,
    job_parts,
    module_bytes,
)
from engine.models.residency import Residency
from engine.pipeline.txt2img import txt2img
from tests.fakes.tiny_models import load_tiny
from tests.fakes.tiny_models import tiny_params as params

GIB = 2**30


def gib(**parts: float) -> Footprint:
    return Footprint(**{name: int(value * GIB) for name, value in parts.items()})


# fp16 sizes of the real architectures; working = the planner's activation estimate at native size
SD15 = gib(text_encoders=0.23, unet=1.6, vae=0.16, working=0.68, largest_layer=0.05)
SDXL = gib(text_encoders=1.53, unet=4.78, vae=0.16, working=2.74, largest_layer=0.1)
SDXL_REFINER = gib(text_encoders=1.39, unet=4.52, vae=0.16, working=3.29, largest_layer=0.1)
WITH_REFINER = SDXL.with_refiner(SDXL_REFINER)  # 15.8 GiB at once; the base's UNet is the largest part


@pytest.mark.parametrize(
    ("footprint", "free_gib", "plan"),
    [
        (SD15, 24, GPU_ONLY),
        (SD15, 3.1, GPU_ONLY),  # needs 2.67 GiB: fits in 90 % of 3.1
        (SD15, 2.6, MEDVRAM),  # the UNet and its activations fit, not everything at once
        (SD15, 2.0, LOWVRAM),  # SD 1.5 in 2 GB: layer by layer
        (SDXL, 24, GPU_ONLY),
        (SDXL, 10, MEDVRAM),
        (SDXL, 8, LOWVRAM),
        (SDXL, 4, LOWVRAM),  # SDXL in 4 GB
        (WITH_REFINER, 24, GPU_ONLY),  # both models resident
        (WITH_REFINER, 12, MEDVRAM),  # the refiner takes its turn with the base's parts
        (WITH_REFINER, 8, LOWVRAM),  # the refiner's step activations are the larger
    ],
)
def test_the_heaviest_plan_that_fits(footprint, free_gib, plan):
    choice = choose_plan(int(free_gib * GIB), footprint)
    assert choice.plan == plan
    assert choice.expected == footprint.expected(plan) <= free_gib * GIB * 0.9
    assert choice.describe().startswith(f"{plan}: expects ")


def test_when_nothing_fits_the_lightest_plan_says_so():
    choice = choose_plan(int(0.5 * GIB), SDXL)
    assert choice.plan == LOWVRAM and "may not fit" in choice.why


def test_on_a_cpu_nothing_moves():
    choice = choose_plan(None, SDXL, forced=LOWVRAM)
    assert choice.plan == GPU_ONLY and choice.describe() == "gpu-only: runs on the CPU: nothing to move"


def test_a_forced_plan_and_a_lighter_one_after_out_of_memory():
    assert choose_plan(24 * GIB, SD15, forced=MEDVRAM).plan == MEDVRAM
    assert choose_plan(24 * GIB, SD15, forced="auto").plan == GPU_ONLY
    assert choose_plan(24 * GIB, SD15, lightest_first=1).plan == MEDVRAM
    assert choose_plan(24 * GIB, SD15, lightest_first=5).plan == LOWVRAM
    with pytest.raises(ValueError, match="unknown memory plan 'fast'"):
        choose_plan(24 * GIB, SD15, forced="fast")


@pytest.mark.parametrize(
    ("flags", "sdxl", "plan"),
    [
        ({}, False, None),
        ({"medvram": True}, False, MEDVRAM),
        ({"medvram_sdxl": True}, False, None),  # A1111: only for SDXL models
        ({"medvram_sdxl": True}, True, MEDVRAM),
        ({"lowvram": True, "medvram": True}, False, LOWVRAM),
        ({"gpu_only": True}, True, GPU_ONLY),
    ],
)
def test_start_flags(flags, sdxl, plan):
    assert MemoryFlags(**flags).forced(is_sdxl=sdxl) == plan


@pytest.fixture
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


def test_the_footprint_of_a_model(model):
    footprint = Footprint.of(model, 64, 64, 1)
    assert footprint.unet == sum(p.numel() * 4 for p in model.unet.parameters()) + sum(
        b.numel() * b.element_size() for b in model.unet.buffers()
    )
    assert footprint.text_encoders == module_bytes([model.text_encoder])
    assert footprint.vae == module_bytes([model.vae])
    # the biggest single layer of this tiny model is CLIP's 49,408-token embedding table
    assert footprint.largest_layer == module_bytes([model.text_encoder.get_input_embeddings()])
    assert Footprint.of(model, 128, 64, 2).working == 4 * footprint.working  # area × batch


def test_a_job_with_a_refiner_plans_both_models(model, tiny_diffusers_dir, monkeypatch):
    from engine.models import residency as residency_module

    refiner = load_tiny(tiny_diffusers_dir)  # any second checkpoint: the plan only counts parts
    solo = Footprint.of(model, 64, 64, 1)
    both = solo.with_refiner(Footprint.of(refiner, 64, 64, 1))
    assert both.expected(GPU_ONLY) == solo.expected(GPU_ONLY) + solo.text_encoders + solo.unet + solo.vae
    assert both.expected(MEDVRAM) == solo.expected(MEDVRAM)  # the same part sizes, one at a time
    parts = job_parts(model, refiner)
    assert list(parts) == ["text", "unet", "vae", "refiner text", "refiner unet", "refiner vae"]
    assert parts["refiner unet"] == [refiner.unet]
    assert job_parts(model, model) == model.part_groups()  # the base as its own refiner: one model
    moved: list[tuple[object, torch.device]] = []
    monkeypatch.setattr(residency_module, "_move", lambda module, device: moved.append((module, device)))
    residency = Residency(torch.device("cpu"), storage=torch.device("cpu", 1))
    residency.apply(GPU_ONLY, parts)
    moved.clear()
    residency.apply(GPU_ONLY, model.part_groups())  # the next job has no refiner: it goes to RAM
    refiner_parts = [refiner.text_encoder, refiner.unet, refiner.vae]
    assert [m for m, device in moved if device == residency.storage] == refiner_parts


def _draw(model) -> np.ndarray:
    return np.asarray(txt2img(model, params(seed=7)).images[0])


@pytest.mark.parametrize("plan", [MEDVRAM, LOWVRAM])
def test_every_plan_draws_the_same_pixels(model, plan):
    expected = _draw(model)
    residency = Residency(torch.device("cpu"))
    planned = dataclasses.replace(model, residency=residency)
    residency.apply(plan, planned.part_groups())
    assert np.array_equal(_draw(planned), expected)
    if plan == MEDVRAM:  # the hooks took the parts in turn: prompt, sampling, decode
        assert residency.active == "vae" and residency.moves >= 3
    residency.apply(GPU_ONLY, planned.part_groups())  # and back: hooks gone, same pixels
    assert np.array_equal(_draw(planned), expected)


def test_lowvram_streams_with_diffusers_group_offloading(model):
    from diffusers.hooks import HookRegistry

    residency = Residency(torch.device("cpu"))
    residency.apply(LOWVRAM, model.part_groups())
    assert HookRegistry.check_if_exists_or_initialize(model.unet.conv_in).get_hook("group_offloading")
    residency.apply(GPU_ONLY, model.part_groups())
    assert HookRegistry.check_if_exists_or_initialize(model.unet.conv_in).get_hook("group_offloading") is None


def test_a_model_on_the_cpu_keeps_everything_resident(tiny_diffusers_dir, tmp_path, monkeypatch):
    manager = manager_module.ModelManager(root=tmp_path, extra_dirs=[tiny_diffusers_dir.parent], device="cpu")
    loaded = manager.get(tiny_diffusers_dir.name)
    assert manager.plan_job(loaded, 64, 64, 1, forced=MEDVRAM).plan == GPU_ONLY
    assert manager.last_plan is not None and loaded.residency.plan == GPU_ONLY
    seen = []
    real = manager_module.choose_plan
    monkeypatch.setattr(manager_module, "choose_plan", lambda *a: seen.append(a[3]) or real(*a))
    manager.after_out_of_memory()
    manager.plan_job(loaded, 64, 64, 1)
    assert seen == [1]  # the next automatic plan starts one step lighter


def test_an_out_of_memory_in_the_queue_lightens_the_next_plan():
    from engine.service.jobs import Job, JobQueue

    calls: list[int] = []
    queue = JobQueue(torch.device("cpu"), on_out_of_memory=lambda: calls.append(1))

    def runs_out(*, job):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    failed = queue.submit(Job(), runs_out)
    assert failed.wait(30) and calls == [1]
    fine = queue.submit(Job(), lambda *, job: "ok")
    assert fine.wait(30) and fine.result == "ok" and calls == [1]


def test_each_job_gets_a_plan_from_the_flags_then_the_settings(tmp_path, monkeypatch):
    from engine.schema.params import GenerationParams
    from engine.service.facade import Engine

    engine = Engine(
        data_dir=tmp_path, device="cpu", load_extensions=False, memory_flags=MemoryFlags(medvram_sdxl=True)
    )
    assert engine.memory_plan_text().startswith("No job has run yet")
    forced: list[str | None] = []
    real = engine.models.plan_job
    monkeypatch.setattr(engine.models, "plan_job", lambda *a, **k: forced.append(a[4]) or real(*a, **k))
    job = GenerationParams(prompt="a red circle", steps=2, width=64, height=64, seed=1)
    assert engine.submit_txt2img(job).wait(120)
    engine.update_settings(memory_plan="lowvram")
    assert engine.submit_txt2img(job.model_copy(update={"enable_hr": True, "hr_scale": 2.0})).wait(120)
    # the built-in model is SD 1.x: --medvram-sdxl leaves it to the Settings (auto, then lowvram)
    assert forced == ["auto", "lowvram"]
    assert engine.memory_plan_text() == "gpu-only: runs on the CPU: nothing to move"
