"""bench/flow.py runs as a user would, for SD 3 and Flux, and prints one JSON line with its ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_flow_bench_prints_its_ratio(family: str) -> None:
    command = [sys.executable, "bench/flow.py", "--family", family, "--steps", "2", "--repeats", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert (
        result["family"] == family
        and result["steps"] == 2
        and result["ours_s"] > 0
        and result["diffusers_s"] > 0
    )
    assert abs(result["ratio"] - result["ours_s"] / result["diffusers_s"]) < 0.01
