"""Fixtures for the browser tests: a real Atelier server (launch.py, built-in model) and a headless
Chromium page driven by Playwright.

Set ATELIER_E2E_URL=http://127.0.0.1:7860 to run the tests against a server that is already up
(quicker while working on the UI); the PNG Info test then generates its own image.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# Flags that keep a headless Chromium quiet: no sandbox (containers run as root), no GPU, and no
# calls home (component updates, sync, background networking).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 180  # imports (torch, diffusers, gradio) on a busy 2-core machine


@dataclass
class Server:
    url: str
    data_dir: Path | None  # None for an external server (ATELIER_E2E_URL)
    log_path: Path | None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def atelier_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    external = os.environ.get("ATELIER_E2E_URL")
    if external:
        yield Server(url=external.rstrip("/"), data_dir=None, log_path=None)
        return

    data_dir = tmp_path_factory.mktemp("atelier-data")
    log_path = data_dir / "server.log"
    port = _free_port()
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
    ]
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(url=f"http://127.0.0.1:{port}", data_dir=data_dir, log_path=log_path)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _is_up(server.url):
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


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: install it with `apt-get install -y --no-install-recommends chromium` "
            "(or run `python launch.py --run-tests`, which sets it up)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, atelier_server: Server) -> Iterator[object]:
    """A fresh page (its own Gradio session) with the app loaded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(atelier_server.url)
    page.wait_for_selector("#txt2img_generate")
    try:
        yield page
    finally:
        context.close()
