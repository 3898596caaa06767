"""What the HTTP API costs on top of the engine: a tiny txt2img job (64×64, 1 step, the built-in
model) through POST /sdapi/v1/txt2img against the same job through the engine's own call, in this
process, alternating, median of --repeats each.

    .venv/bin/python bench/api_overhead.py [--repeats 20]

The API side includes the server as it runs (the web guard's host/origin checks and headers, the
routes beside the mounted page), JSON parsing, validation, the queue, PNG + base64 encoding of the
answer and the HTTP round trip on localhost (uvicorn in a thread of this process). Ends with one JSON line
{"engine_ms": …, "api_ms": …, "overhead_ms": …, "ratio": …}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    options = parser.parse_args()

    import httpx
    import uvicorn

    from engine.cmd_args import parse_args
    from engine.schema.params import GenerationParams
    from engine.service.facade import Engine
    from ui.server import build_app

    data = Path(tempfile.mkdtemp(prefix="api-bench-"))
    engine = Engine(data_dir=data, device="cpu")
    engine.update_settings(save_images=False, show_progress_every_n_steps=0)
    app = build_app(engine, parse_args(["--api", "--data-dir", str(data)]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    body = {
        "prompt": "a red circle",
        "steps": 1,
        "width": 64,
        "height": 64,
        "seed": 1,
        "sampler_name": "Euler",
    }
    params = GenerationParams(**body)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    engine.txt2img(params)  # load the model and warm both paths up
    client.post("/sdapi/v1/txt2img", json=body).raise_for_status()

    direct, over_http = [], []
    for _ in range(options.repeats):
        started = time.perf_counter()
        engine.txt2img(params)
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.post("/sdapi/v1/txt2img", json=body).raise_for_status()
        over_http.append(time.perf_counter() - started)
    server.should_exit = True

    engine_ms, api_ms = 1000 * statistics.median(direct), 1000 * statistics.median(over_http)
    print(f"engine call:   {engine_ms:8.1f} ms (median of {options.repeats})")
    print(f"POST txt2img:  {api_ms:8.1f} ms")
    print(f"overhead:      {api_ms - engine_ms:8.1f} ms  (ratio {api_ms / engine_ms:.2f})")
    result = {"engine_ms": round(engine_ms, 1), "api_ms": round(api_ms, 1)}
    result.update(overhead_ms=round(api_ms - engine_ms, 1), ratio=round(api_ms / engine_ms, 3))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
