"""The server itself: options (A1111's settings), the command-line flags (secrets masked) and
memory use."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import psutil
from fastapi import APIRouter

from api.options import SECRET_FLAGS, apply_options, current_options
from api.routes.common import make_router, wait


def system_router(engine: Any, dependencies: list[Any], args: argparse.Namespace) -> APIRouter:
    router = make_router(dependencies)

    @router.get("/options")
    def get_options() -> dict[str, Any]:
        return current_options(engine)

    def load_checkpoint(title: str) -> None:
        # A job of its own: it loads after the jobs queued before it, never beside a running one,
        # and the answer comes once it is loaded (A1111 blocks too). A failed load is answered as
        # a failed job is: 400 for a broken file, 507 when memory ran out.
        wait(engine.submit_load(title))

    @router.post("/options")
    def set_options(changes: dict[str, Any]) -> dict[str, Any]:
        return apply_options(engine, changes, load_checkpoint)

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        flags = {}
        for key, value in vars(args).items():
            if key in SECRET_FLAGS:
                value = "***" if value else None
            flags[key] = str(value) if isinstance(value, Path) else value
        return flags

    @router.get("/memory")
    def memory() -> dict[str, Any]:
        vm, process = psutil.virtual_memory(), psutil.Process(os.getpid())
        ram = {
            "free": vm.available,
            "used": vm.total - vm.available,
            "total": vm.total,
            "process_rss": process.memory_info().rss,
        }
        cuda: dict[str, Any] = {"error": "no CUDA device"}
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            cuda = {"system": {"free": free, "used": total - free, "total": total}, **cuda_stats(torch)}
        return {"ram": ram, "cuda": cuda}

    return router


def cuda_stats(torch: Any) -> dict[str, Any]:
    """A1111's CUDA figures from the caching allocator: active, allocated, reserved and inactive
    bytes (now and at their peak), and how often it retried or ran out."""
    stats = torch.cuda.memory_stats()

    def pair(name: str) -> dict[str, int]:
        return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

    return {
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }
