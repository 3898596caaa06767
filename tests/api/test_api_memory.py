"""`/sdapi/v1/memory` in A1111's shape: RAM figures always, the CUDA allocator's figures on a GPU."""

from __future__ import annotations

from types import SimpleNamespace

from api.routes.system import cuda_stats


def test_cuda_figures_come_from_the_allocator_statistics():
    stats = {
        "active_bytes.all.current": 5, "active_bytes.all.peak": 9,
        "allocated_bytes.all.current": 4, "allocated_bytes.all.peak": 8,
        "reserved_bytes.all.current": 16, "reserved_bytes.all.peak": 32,
        "inactive_split_bytes.all.current": 1, "inactive_split_bytes.all.peak": 2,
        "num_alloc_retries": 3, "num_ooms": 1,
    }  # fmt: skip
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(memory_stats=lambda: stats))
    figures = cuda_stats(fake_torch)
    assert figures["active"] == {"current": 5, "peak": 9}
    assert figures["allocated"] == {"current": 4, "peak": 8}
    assert figures["reserved"] == {"current": 16, "peak": 32}
    assert figures["inactive"] == {"current": 1, "peak": 2}
    assert figures["events"] == {"retries": 3, "oom": 1}


def test_the_memory_route_on_a_cpu(tmp_path):
    from fastapi.testclient import TestClient

    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    engine = Engine(data_dir=tmp_path, device="cpu", load_extensions=False)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(tmp_path)]))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] >= memory["ram"]["used"] > 0 and memory["ram"]["process_rss"] > 0
    assert memory["cuda"] == {"error": "no CUDA device"}
