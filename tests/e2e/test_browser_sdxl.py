"""SDXL in a real browser: choose an SDXL checkpoint, see its size proposed, run a small
generation with the refiner and read the refiner's keys in the infotext.

The server gets a models folder (`--models-dir`) holding tiny random SDXL base and refiner
checkpoints; the base's config says 1024 px, as a real SDXL checkpoint's does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.server_process import Server, open_page, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GENERATE_TIMEOUT_MS = 300_000
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def sdxl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.fakes.tiny_models import tiny_components, write_single_file

    models = tmp_path_factory.mktemp("sdxl-models") / "models"
    folder = models / "Stable-diffusion"
    base = tiny_components(seed=0, family="sdxl")
    base.unet.register_to_config(sample_size=128)  # 128 latents × 8 = SDXL's 1024 px
    write_single_file(base, folder / "tiny-xl.safetensors")
    write_single_file(tiny_components(seed=1, family="sdxl-refiner"), folder / "tiny-xl-refiner.safetensors")
    data = tmp_path_factory.mktemp("sdxl-data")
    with running_server(data, ["--models-dir", str(models)]) as server:
        yield server


@pytest.fixture
def page(browser, sdxl_server: Server) -> Iterator[object]:
    with open_page(browser, sdxl_server.url) as page:
        yield page


def _number(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[type=number]").input_value()


def _set_number(page, elem_id: str, value: float) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")
    field.blur()


def _choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_choosing_sdxl_proposes_1024_and_the_refiner_reaches_the_infotext(page):
    assert _number(page, "txt2img_width") == "128"  # the built-in model's size
    _choose(page, "setting_sd_model_checkpoint", "tiny-xl")
    page.wait_for_function(
        "() => document.querySelector('#txt2img_width input[type=number]').value === '1024'", timeout=60_000
    )
    assert _number(page, "txt2img_height") == "1024"
    page.locator("#txt2img_size_presets input").click()  # the picker offers SDXL's buckets
    assert page.get_by_role("option", name="1216×832", exact=True).is_visible()
    page.get_by_role("option", name="832×1216", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img_width input[type=number]').value === '832'"
    )
    assert _number(page, "txt2img_height") == "1216"

    page.locator("#txt2img_prompt textarea").fill("a red circle")
    _set_number(page, "txt2img_width", 64)  # typed by hand: the picker no longer shows a size
    page.wait_for_function("() => document.querySelector('#txt2img_size_presets input').value === ''")
    for elem_id, value in (
        ("txt2img_width", 64),
        ("txt2img_height", 64),
        ("txt2img_steps", 4),
        ("txt2img_seed", 7),
    ):
        _set_number(page, elem_id, value)
    page.locator("#txt2img_refiner").get_by_text("Refiner").first.click()  # open the accordion
    _choose(page, "txt2img_refiner_checkpoint", "tiny-xl-refiner")
    _set_number(page, "txt2img_refiner_switch_at", 0.5)
    page.click("#txt2img_generate")
    page.wait_for_function(
        "() => (document.querySelector('#txt2img_infotext')?.innerText || '').includes('Refiner')",
        timeout=GENERATE_TIMEOUT_MS,
    )
    infotext = page.inner_text("#txt2img_infotext")
    assert "Model: tiny-xl," in infotext and "Size: 64x64" in infotext
    assert "Refiner: tiny-xl-refiner [" in infotext and "Refiner switch at: 0.5" in infotext
    assert page.locator(".atelier-msg-error").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sdxl-refiner.png"), full_page=True)
