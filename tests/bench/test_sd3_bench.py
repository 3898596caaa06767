"""bench/sd3.py runs as a user would and prints one JSON line with its ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_sd3_bench_prints_its_ratio() -> None:
    command = [sys.executable, "bench/sd3.py", "--steps", "2", "--repeats", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert result["steps"] == 2 and result["ours_s"] > 0 and result["diffusers_s"] > 0
    assert abs(result["ratio"] - result["ours_s"] / result["diffusers_s"]) < 0.01
