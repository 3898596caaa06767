"""Fixtures for the browser tests: a real Atelier server (launch.py, built-in model) and a headless
Chromium page driven by Playwright.

Set ATELIER_E2E_URL=http://127.0.0.1:7860 to run the tests against a server that is already up
(quicker while working on the UI); the PNG Info test then generates its own image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.server_process import Server, open_page, running_server

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


@pytest.fixture(scope="session")
def atelier_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    external = os.environ.get("ATELIER_E2E_URL")
    if external:
        yield Server(url=external.rstrip("/"), data_dir=None, log_path=None)
        return
    with running_server(tmp_path_factory.mktemp("atelier-data")) as server:
        yield server


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
    with open_page(browser, atelier_server.url) as page:
        yield page
