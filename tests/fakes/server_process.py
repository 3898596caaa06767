"""A real Atelier server for tests that speak HTTP to it (browser tests, API tests): `launch.py`
in a subprocess on a free port, with its own data folder, stopped when the block ends."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_SECONDS = 180  # imports (torch, diffusers, gradio) on a busy 2-core machine


@dataclass
class Server:
    url: str
    data_dir: Path | None  # None for an external server (ATELIER_E2E_URL)
    log_path: Path | None
    pid: int | None = None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_up(url: str) -> bool:
    """The server answers `url` (any status but 404: an API route answers 401 without credentials)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code != 404
    except OSError:
        return False


@contextlib.contextmanager
def running_server(data_dir: Path, extra_args: list[str] = (), ready_path: str = "/") -> Iterator[Server]:
    """launch.py --skip-install on a free port with `data_dir`; fails the test with the server's
    log when it exits or does not answer `ready_path` in time (the API's routes are added a moment
    after the page is served)."""
    log_path = data_dir / "server.log"
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    command = [
        sys.executable,
        str(REPO_ROOT / "launch.py"),
        "--skip-install",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--controlnet-dir",
        str(data_dir / "ControlNet"),
        *extra_args,
    ]
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(url=f"http://127.0.0.1:{port}", data_dir=data_dir, log_path=log_path, pid=process.pid)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not is_up(server.url + ready_path):
            if process.poll() is not None:
                pytest.fail(f"launch.py exited with code {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {SERVER_START_SECONDS}s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def write_test_controlnet(folder: Path) -> None:
    """A ControlNet shaped for the built-in UNet, seeded, with non-zero output convolutions: the
    plumbing tests stay independent of the trained canny ControlNet's weights (its quality has its
    own tests in test_builtin_controlnet.py)."""
    import json

    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    config_path = REPO_ROOT / "models/builtin/atelier-tiny.config/unet/config.json"
    config = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(
        UNet2DConditionModel.from_config(config), load_weights_from_unet=False
    )
    with torch.no_grad():
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            block.weight.normal_(0, 0.05)
    controlnet.save_pretrained(folder)


@contextlib.contextmanager
def open_page(browser, url: str) -> Iterator[object]:
    """A fresh page (its own Gradio session) with the app at `url` loaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#txt2img_generate")
    try:
        yield page
    finally:
        context.close()
