"""Start-up time and peak memory of the real server, against an import-only baseline.

    .venv/bin/python bench/startup.py [--repeat 3] [--no-generate]

Each run starts `launch.py --skip-install --port <free port> --data-dir <temp dir>` (a temp data
dir, so the user's config.json and outputs/ are never touched), polls http://127.0.0.1:<port>/
until the first HTTP 200, and samples the RSS of the whole server process tree meanwhile. After
start-up it keeps sampling for --settle seconds (the UI loads the model in the background) and,
when the server has the A1111 API, times one small txt2img request. The baseline, measured in
the same run on the same warm disk cache, is a bare `python -c "import torch, gradio, diffusers"`:
start-up can never beat it, so `startup_ratio` says how much Atelier adds on top.

Progress goes to stderr; stdout gets exactly one JSON line, e.g.
    {"startup_s": 9.1, "peak_rss_mb": 1650.2, "import_baseline_s": 6.8, "startup_ratio": 1.34, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

try:
    import psutil
except ModuleNotFoundError:
    sys.exit("bench/startup.py needs psutil: run it with .venv/bin/python (python3 launch.py installs it)")

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
BASELINE_CODE = "import torch, gradio, diffusers"
MB = 1024 * 1024


def note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.pop("ATELIER_LAUNCH_BOOTSTRAPPED", None)  # never inherit the launcher's internal marker
    return env


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants; keeps the peak.

    The sum over-counts pages shared between processes (e.g. a forked worker), which errs on the
    safe side for a "will it fit in RAM" number.
    """

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop_event = threading.Event()

    def tree_rss(self) -> int:
        total = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_bytes = max(self.peak_bytes, self.tree_rss())
            self._stop_event.wait(self.interval_s)

    def peak_mb(self) -> float:
        return round(self.peak_bytes / MB, 1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def wait_for_http_200(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # not listening yet
        time.sleep(0.05)
    raise RuntimeError(f"no HTTP 200 from {url} within {timeout_s:.0f} s")


def try_generate(base_url: str, steps: int, timeout_s: float) -> float | None:
    """One small txt2img through the A1111-style API; None when the server has no such endpoint."""
    body = json.dumps({"prompt": "a lighthouse on a cliff at dusk", "steps": steps, "seed": 1}).encode()
    request = urllib.request.Request(
        f"{base_url}/sdapi/v1/txt2img", data=body, headers={"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405):
            note("no /sdapi/v1/txt2img endpoint; skipping the generation step")
            return None
        raise RuntimeError(f"txt2img request failed: HTTP {exc.code} {exc.read()[:300]!r}") from exc
    return time.perf_counter() - start


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it was started in its own session), then SIGKILL."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    for child in descendants:  # anything that left the group
        try:
            child.kill()
        except psutil.Error:
            pass


def measure_baseline(python: Path) -> float:
    start = time.perf_counter()
    # stdout to /dev/null: this script's stdout is reserved for its one JSON line.
    subprocess.run(
        [str(python), "-c", BASELINE_CODE], check=True, env=server_env(), stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def measure_server(python: Path, args: argparse.Namespace) -> dict[str, float | None]:
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    log_path = data_dir / "server.log"
    command = [str(python), str(REPO / "launch.py"), "--skip-install", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--device", args.device]
    base_url = f"http://127.0.0.1:{port}"
    note(f"starting: {' '.join(command)}")
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=REPO, env=server_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        sampler = TreeRssSampler(proc.pid)
        sampler.start()
        try:
            wait_for_http_200(f"{base_url}/", proc, args.timeout)
            startup_s = time.perf_counter() - start
            note(f"HTTP 200 after {startup_s:.2f} s")
            # Sample once more now: the last periodic sample may predate the final allocations.
            peak_startup = round(max(sampler.peak_bytes, sampler.tree_rss()) / MB, 1)
            time.sleep(args.settle)  # the background model warm-up runs now
            generate_s = None if args.no_generate else try_generate(base_url, args.steps, args.timeout)
            if generate_s is not None:
                note(f"txt2img ({args.steps} steps) took {generate_s:.2f} s")
        except Exception:
            tail = log_path.read_text(errors="replace")[-4000:]
            note(f"server log ({log_path}), last lines:\n{tail}")
            raise
        finally:
            sampler.stop()
            stop_tree(proc)
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "startup_s": startup_s,
        "peak_rss_mb": sampler.peak_mb(),
        "peak_rss_startup_mb": peak_startup,
        "generate_s": generate_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each measurement; medians are reported"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds to keep sampling RSS after start-up"
    )
    parser.add_argument("--no-generate", action="store_true", help="skip the txt2img request")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps of the txt2img request")
    parser.add_argument("--device", default="cpu", help="--device passed to launch.py (default: cpu)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for start-up/generation"
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=None,
        help="exit 1 when startup_ratio is above this (1.0: no slower than importing the libraries)",
    )
    args = parser.parse_args()

    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    # One untimed import first, so the baseline and the server both start from a warm disk cache.
    note(f"warming the disk cache: {python} -c {BASELINE_CODE!r}")
    measure_baseline(python)
    baselines = [measure_baseline(python) for _ in range(args.repeat)]
    note(f"import baseline: {', '.join(f'{b:.2f}' for b in baselines)} s")

    runs = [measure_server(python, args) for _ in range(args.repeat)]

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 3) if values else None

    startup_s = median("startup_s")
    baseline_s = round(statistics.median(baselines), 3)
    result = {
        "startup_s": startup_s,
        "peak_rss_mb": max(float(r["peak_rss_mb"] or 0) for r in runs),
        "import_baseline_s": baseline_s,
        "startup_ratio": round(startup_s / baseline_s, 3) if startup_s else None,
        "peak_rss_startup_mb": max(float(r["peak_rss_startup_mb"] or 0) for r in runs),
        "generate_s": median("generate_s"),
        "repeat": args.repeat,
        "device": args.device,
    }
    print(json.dumps(result), flush=True)
    if args.max_ratio is not None and (
        result["startup_ratio"] is None or result["startup_ratio"] > args.max_ratio
    ):
        note(f"startup_ratio {result['startup_ratio']} is above --max-ratio {args.max_ratio}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
