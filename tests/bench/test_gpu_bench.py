"""bench/gpu.py on the CPU: the smoke run a GPU run relies on (every part runs, the JSON line has
its figures, the memory caps say they were skipped), the refusal without CUDA, and how a capped
job's outcome is recorded (the part that needs a GPU to run for real)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
COMPARISONS = [("sd15", "batch_1"), ("sd15", "batch_4"), ("sdxl", "batch_1")]


@pytest.fixture(scope="module")
def smoke() -> dict:
    """The JSON line of `bench/gpu.py --device cpu --tiny --steps 2 --no-compile`, run as a user would."""
    command = [sys.executable, "bench/gpu.py", "--device", "cpu", "--tiny", "--steps", "2", "--no-compile"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # one JSON line on stdout; progress goes to stderr
    assert "sd15/batch_1/eager" in done.stderr
    return json.loads(lines[0])


def test_smoke_run_measures_every_comparison(smoke: dict) -> None:
    assert smoke["device"] == "cpu" and smoke["dtype"] == "float32"
    assert smoke["tiny"] is True and smoke["steps"] == 2
    assert smoke["sizes"] == {"sd15": 64, "sdxl": 64}
    for part, batch in COMPARISONS:
        figures = smoke[part][batch]["eager"]
        assert "error" not in figures, figures
        for side in ("ours", "diffusers"):
            assert figures[f"{side}_s"] > 0 and figures[f"warmup_{side}_s"] > 0
            assert figures[f"{side}_it_s"] == pytest.approx(2 / figures[f"{side}_s"], rel=0.02)
            assert figures[f"{side}_peak_gib"] is None  # no GPU to read
        ratio = figures["ours_it_s"] / figures["diffusers_it_s"]
        assert figures["it_s_ratio"] == pytest.approx(ratio, rel=0.01)
        assert smoke["headline_it_s_ratio"][f"{part}_{batch}_eager"] == figures["it_s_ratio"]
        assert smoke[part][batch]["compiled"] == {"skipped": "--no-compile"}
    assert "batch_4" not in smoke["sdxl"]
    assert smoke["caps"] == {"skipped": "no CUDA"}
    assert set(smoke["headline_it_s_ratio"]) == {f"{part}_{batch}_eager" for part, batch in COMPARISONS}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_to_run_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import gpu

    with pytest.raises(SystemExit) as exit_:
        gpu.main([])  # --device cuda is the default
    assert "CUDA is not available" in str(exit_.value.code)  # sys.exit(text): status 1, text on stderr
    assert capsys.readouterr().out == ""  # no JSON line


def test_a_capped_job_records_its_time_or_atelier_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap runs go through the job queue: a finished job gives its seconds, one that runs out of
    memory (here while its parts move to the GPU, as SDXL's do under a 4 GiB cap) gives our error."""
    from bench import gpu
    from engine.models.memory_plan import GPU_ONLY
    from engine.models.residency import Residency
    from engine.service.jobs import JobQueue
    from tests.fakes.memory import OOM_TEXT, OutOfMemoryStage

    model = gpu.build_model("sd1", torch.device("cpu"), torch.float32, tiny=True)
    model.residency = Residency(model.device)
    queue = JobQueue(model.device)
    finished = gpu.queued(queue, model, GPU_ONLY, 64, 2)
    assert finished["failed"] is False and finished["seconds"] > 0
    assert finished["peak_gib"] is None  # no GPU

    monkeypatch.setattr(model.residency, "apply", OutOfMemoryStage())
    failed = gpu.queued(queue, model, GPU_ONLY, 64, 2)
    assert failed["failed"] is True and failed["atelier_out_of_memory"] is True
    assert failed["error"] == "OutOfMemory"
    assert failed["message"].startswith(f"Out of memory during txt2img ({OOM_TEXT})")
