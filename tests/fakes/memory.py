"""Memory checks shared by the model tests."""

from __future__ import annotations

import gc
from typing import Any

import psutil


def rss_growth_over_switches(manager: Any, first: str, second: str, rounds: int = 10) -> int:
    """Bytes the process's RSS grew over `rounds` × switching `manager` between two checkpoints,
    after two warm-up rounds (allocator pools, lazily imported modules, caches)."""
    process = psutil.Process()
    for _ in range(2):
        manager.get(first)
        manager.get(second)
    gc.collect()
    before = process.memory_info().rss
    for _ in range(rounds):
        manager.get(first)
        manager.get(second)
    gc.collect()
    return process.memory_info().rss - before
