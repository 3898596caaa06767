"""The real app in a real browser: type a prompt, Generate, see the image and its infotext; then
read that image back in PNG Info and send it to txt2img.

Runs the built-in model on the CPU at 128 px with 4 steps, so one generation takes seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.web_guard import PROTECTIVE_HEADERS
from tests.fakes.server_process import write_test_controlnet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = 1234
STEPS = 4
SIZE = 128
GENERATE_TIMEOUT_MS = 300_000  # the first Generate also loads the model
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _set_number(page, elem_id: str, value: int) -> None:
    """Type into a slider's (or number box's) number field and commit it like a user would."""
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")
    field.blur()


def _generate(page, prompt: str) -> None:
    page.locator("#txt2img_prompt textarea").fill(prompt)
    _set_number(page, "txt2img_steps", STEPS)
    _set_number(page, "txt2img_width", SIZE)
    _set_number(page, "txt2img_height", SIZE)
    _set_number(page, "txt2img_seed", SEED)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", state="visible", timeout=GENERATE_TIMEOUT_MS)
    page.wait_for_function(
        "() => (document.querySelector('#txt2img_infotext')?.innerText || '').includes('Seed:')"
    )


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_txt2img_generates_an_image_with_its_infotext(page):
    _generate(page, "a large red circle at the top left on a blue background")

    assert page.locator("#txt2img_gallery img").count() >= 1
    infotext = page.inner_text("#txt2img_infotext")
    assert f"Seed: {SEED}" in infotext
    assert f"Steps: {STEPS}" in infotext and f"Size: {SIZE}x{SIZE}" in infotext
    assert "a large red circle" in infotext
    # The built-in model's preferred sampler settings (models/builtin/atelier-tiny.json) were used.
    assert "NGMS: 3" in infotext and "NGMS all steps: True" in infotext
    assert page.locator(".atelier-msg-error").count() == 0
    # Generate is back (the run is over) and the progress bar is gone.
    assert page.locator("#txt2img_generate").is_visible()
    assert page.locator("#txt2img_progress .atelier-progress").count() == 0

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img.png"), full_page=True)


def test_invalid_size_shows_a_message_not_a_traceback(page):
    page.locator("#txt2img_prompt textarea").fill("a square")
    # 100 is inside the slider's range but not a multiple of 8: the schema rejects it.
    _set_number(page, "txt2img_width", 100)
    page.click("#txt2img_generate")
    message = page.locator("#txt2img_infotext .atelier-msg-error")
    message.wait_for(timeout=30_000)
    assert "width" in message.inner_text() and "multiple of 8" in message.inner_text()
    assert "Traceback" not in page.content()


def _generated_png(page, atelier_server, tmp_path: Path) -> Path:
    """A PNG the engine wrote in this run, or (external server) one fetched from the gallery."""
    if atelier_server.data_dir is not None:
        written = sorted(atelier_server.data_dir.rglob("*.png"))
        if written:
            return written[-1]
    _generate(page, "a small green square")
    src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    response = page.request.get(src if src.startswith("http") else atelier_server.url + src)
    path = tmp_path / "generated.png"
    path.write_bytes(response.body())
    return path


def test_png_info_reads_a_generated_image_and_sends_it_to_txt2img(page, atelier_server, tmp_path):
    png = _generated_png(page, atelier_server, tmp_path)

    _open_tab(page, "PNG Info")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
    page.wait_for_function(
        "() => (document.querySelector('#pnginfo_text textarea')?.value || '').includes('Seed:')",
        timeout=30_000,
    )
    raw = page.locator("#pnginfo_text textarea").input_value()
    seed = int(re.search(r"Seed: (\d+)", raw).group(1))
    steps = int(re.search(r"Steps: (\d+)", raw).group(1))
    table = page.inner_text("#pnginfo_parsed")
    assert "Seed" in table and str(seed) in table and "Sampler" in table

    page.click("#pnginfo_send_txt2img")
    page.locator("#txt2img_generate").wait_for(state="visible")
    page.wait_for_function(
        f"() => document.querySelector('#txt2img_seed input')?.value === '{seed}'", timeout=30_000
    )
    assert page.locator("#txt2img_steps input[type=number]").input_value() == str(steps)
    assert page.locator("#txt2img_prompt textarea").input_value() != ""


def test_pasted_sampler_parameters_become_per_job_overrides(page, tmp_path):
    """A1111's 'Override settings': sampler parameters in a sent infotext apply to the next job and
    are written into its infotext, without changing the Sampler settings tab."""
    from PIL import Image, PngImagePlugin

    text = (
        "a large red circle at the top left on a blue background\n"
        f"Steps: {STEPS}, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: {SEED}, "
        f"Size: {SIZE}x{SIZE}, Eta: 0.5, Sigma noise: 0.9"
    )
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    png = tmp_path / "with-eta.png"
    Image.new("RGB", (SIZE, SIZE), (30, 70, 220)).save(png, pnginfo=info)

    _open_tab(page, "PNG Info")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
    page.wait_for_function(
        "() => (document.querySelector('#pnginfo_text textarea')?.value || '').includes('Eta: 0.5')",
        timeout=30_000,
    )
    page.click("#pnginfo_send_txt2img")
    overrides = page.locator("#txt2img_override_settings")
    overrides.wait_for(state="visible", timeout=30_000)
    assert "Eta: 0.5" in overrides.inner_text() and "Sigma noise: 0.9" in overrides.inner_text()

    page.click("#txt2img_generate")
    page.wait_for_function(
        "() => (document.querySelector('#txt2img_infotext')?.innerText || '').includes('Eta: 0.5')",
        timeout=GENERATE_TIMEOUT_MS,
    )
    assert "Sigma noise: 0.9" in page.inner_text("#txt2img_infotext")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img-overrides.png"), full_page=True)


def test_sampler_settings_tab_names_the_checkpoints_preferences(page):
    _open_tab(page, "Sampler settings")
    line = page.locator("#sampler_settings_preferred")
    line.wait_for(state="visible", timeout=30_000)
    text = line.inner_text()
    assert "atelier-tiny prefers NGMS: 3, NGMS all steps: True" in text, text
    assert page.locator("#setting_s_min_uncond input").input_value() == "0"  # the setting itself is untouched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sampler-settings.png"), full_page=True)


def _counter(page, elem_id: str) -> str:
    return page.inner_text(f"#{elem_id} .token-count")


def test_token_counters_follow_typing(page):
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("")
    prompt.press_sequentially("a red circle")  # keystroke by keystroke, as a person types
    page.wait_for_function(
        "() => document.querySelector('#txt2img_token_counter .token-count')?.innerText === '3/75'"
    )
    prompt.fill(", ".join(["a red circle"] * 30))  # 119 tokens: a second chunk
    page.wait_for_function(
        "() => document.querySelector('#txt2img_token_counter .token-count')?.innerText === '119/150'"
    )
    page.locator("#txt2img_neg_prompt textarea").fill("blurry, (ugly:1.3)")
    page.wait_for_function(
        "() => document.querySelector('#txt2img_negative_token_counter .token-count')?.innerText === '3/75'"
    )
    assert _counter(page, "txt2img_token_counter") == "119/150"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#txt2img_toprow").screenshot(path=str(ARTIFACTS / "txt2img-token-counter.png"))


def test_styles_save_pick_and_apply(page):
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("{prompt}, watercolour")
    page.locator("#txt2img_neg_prompt textarea").fill("photo")
    page.click("#txt2img_style_save_box")  # open the accordion
    name = page.locator("#txt2img_style_name textarea, #txt2img_style_name input").first
    name.wait_for(state="visible")
    name.fill("E2E watercolour")
    page.click("#txt2img_style_save")
    page.wait_for_function(  # saved: the name box is cleared for the next one
        "() => (document.querySelector('#txt2img_style_name textarea, #txt2img_style_name input')"
        "?.value ?? 'x') === ''",
        timeout=60_000,
    )

    prompt.fill("a red circle")
    page.locator("#txt2img_neg_prompt textarea").fill("")
    page.locator("#txt2img_styles input").click()
    page.get_by_role("option", name="E2E watercolour").click()
    page.click("#txt2img_style_apply")
    page.wait_for_function(
        "() => document.querySelector('#txt2img_prompt textarea').value === 'a red circle, watercolour'"
    )
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "photo"
    # the counters follow text that a button wrote, not only typing
    page.wait_for_function(
        "() => document.querySelector('#txt2img_token_counter .token-count')?.innerText === '5/75'"
        " && document.querySelector('#txt2img_negative_token_counter .token-count')?.innerText === '1/75'"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img-styles.png"))


def test_extra_networks_cards_insert_and_remove_their_tag(page, atelier_server):
    if atelier_server.data_dir is None:
        pytest.skip("needs the test's own data dir to place an embedding in")
    import torch

    folder = atelier_server.data_dir / "embeddings"
    folder.mkdir(exist_ok=True)
    for name in ("e2e-style", "bad-hands", "soft-light"):
        torch.save({"string_to_param": {"*": torch.zeros(1, 64)}}, folder / f"{name}.pt")
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a red circle")
    page.wait_for_function(
        "() => document.querySelector('#txt2img_token_counter .token-count')?.innerText === '3/75'"
    )
    page.click("#txt2img_extra_networks")  # opening the panel reads the folders
    card = page.locator("#txt2img_extra_gallery").get_by_text("e2e-style (embedding)")
    card.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # let the card images load before the screenshot
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "txt2img-extra-networks.png"))
    card.click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img_prompt textarea').value === 'a red circle e2e-style'"
    )
    # the counter follows the click: 4/75 once the model is loaded (the embedding is 1 vector),
    # 8/75 while it is not (the name's tokens: the width is not known yet)
    page.wait_for_function(
        "() => ['4/75', '8/75'].includes("
        "document.querySelector('#txt2img_token_counter .token-count')?.innerText)"
    )
    card.click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img_prompt textarea').value === 'a red circle'"
    )


def test_inpaint_tab_paints_a_mask_and_repaints_only_there(page, atelier_server, tmp_path):
    """The Inpaint tab as an artist uses it: upload a picture, paint over a corner with the brush,
    Generate; the result appears, records the mask options, and changes only where it was painted."""
    from io import BytesIO

    import numpy as np
    from PIL import Image, ImageDraw

    source = Image.new("RGB", (SIZE, SIZE), (30, 60, 200))
    ImageDraw.Draw(source).ellipse((16, 16, 56, 56), fill=(220, 30, 30))
    source_path = tmp_path / "source.png"
    source.save(source_path)

    _open_tab(page, "Inpaint")
    editor = page.locator("#inpaint_inpaint_editor")
    with page.expect_file_chooser() as chooser:
        editor.get_by_role("button", name="Upload", exact=True).click()
    chooser.value.set_files(str(source_path))
    page.wait_for_timeout(2000)  # the canvas draws the picture
    editor.get_by_role("button", name="Brush", exact=True).click()
    canvas = editor.locator("canvas").first.bounding_box()
    # Strokes over the lower-right quarter of the picture (the canvas shows it centred).
    x0, y0 = canvas["x"] + canvas["width"] * 0.6, canvas["y"] + canvas["height"] * 0.6
    for row in range(5):
        page.mouse.move(x0, y0 + row * 20)
        page.mouse.down()
        page.mouse.move(x0 + 120, y0 + row * 20, steps=8)
        page.mouse.up()

    prompt = "a large yellow star at the bottom right on a blue background"
    page.locator("#inpaint_prompt textarea").fill(prompt)
    _set_number(page, "inpaint_steps", 8)
    _set_number(page, "inpaint_denoising_strength", 1)
    _set_number(page, "inpaint_seed", 7)
    page.click("#inpaint_generate")
    page.wait_for_selector("#inpaint_gallery img", state="visible", timeout=GENERATE_TIMEOUT_MS)
    page.wait_for_function(
        "() => (document.querySelector('#inpaint_infotext')?.innerText || '').includes('Seed:')"
    )
    infotext = page.inner_text("#inpaint_infotext")
    assert "Mask blur: 4" in infotext and "Denoising strength: 1" in infotext and "Seed: 7" in infotext
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inpaint.png"), full_page=True)

    src = page.locator("#inpaint_gallery img").first.get_attribute("src")
    body = page.request.get(src if src.startswith("http") else atelier_server.url + src).body()
    result = np.asarray(Image.open(BytesIO(body)).convert("RGB"), dtype=int)
    original = np.asarray(source, dtype=int)
    assert result.shape == original.shape
    changed = np.abs(result - original).sum(-1) > 0
    assert not changed[:40, :40].any()  # the unpainted top-left corner is the input's, exactly
    assert changed[SIZE - 24 :, SIZE - 24 :].mean() > 0.5  # the painted corner was repainted


def test_send_to_img2img_carries_the_picture_and_its_parameters(page):
    prompt = "a large white triangle in the center on a green background"
    _generate(page, prompt)
    page.click("#txt2img_send_to_img2img")
    page.wait_for_function(
        f"() => document.querySelector('#img2img_prompt textarea')?.value === {prompt!r}", timeout=30_000
    )
    assert page.locator("#img2img_seed input").input_value() == str(SEED)
    page.locator("#img2img_init_image img").first.wait_for(state="visible")
    # Generate from it at once: the img2img job runs on the sent picture (0.3 × 12 steps: 4 run).
    _set_number(page, "img2img_denoising_strength", 0.3)
    _set_number(page, "img2img_steps", 12)
    page.click("#img2img_generate")
    page.wait_for_selector("#img2img_gallery img", state="visible", timeout=GENERATE_TIMEOUT_MS)
    page.wait_for_function(
        "() => (document.querySelector('#img2img_infotext')?.innerText || '')"
        ".includes('Denoising strength: 0.3')"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "img2img.png"), full_page=True)


def test_controlnet_tab_previews_the_canny_map_and_generates(page, atelier_server, tmp_path):
    if atelier_server.data_dir is None:
        pytest.skip("needs the test's own data dir to place a ControlNet in")
    write_test_controlnet(atelier_server.data_dir / "ControlNet" / "e2e-canny")
    from PIL import Image, ImageDraw

    control = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(control).rectangle((30, 30, 100, 100), fill="white")
    control_path = tmp_path / "control.png"
    control.save(control_path)

    page.get_by_role("tab", name="ControlNet").first.click()
    page.locator("#controlnet_cn0_image input[type=file]").set_input_files(str(control_path))
    page.wait_for_function("() => document.querySelector('#controlnet_cn0_enable input')?.checked === true")
    page.locator("#controlnet_cn0_module input").click()
    page.get_by_role("option", name="canny", exact=True).click()
    _set_number(page, "controlnet_width", SIZE)
    _set_number(page, "controlnet_height", SIZE)
    page.click("#controlnet_cn0_preview_button")
    page.locator("#controlnet_cn0_preview img").wait_for(state="visible", timeout=60_000)
    src = page.locator("#controlnet_cn0_preview img").get_attribute("src")
    body = page.request.get(src if src.startswith("http") else atelier_server.url + src).body()
    from io import BytesIO

    import numpy as np

    edges = np.asarray(Image.open(BytesIO(body)).convert("L")) > 0
    assert edges.shape == (SIZE, SIZE) and 0.005 < edges.mean() < 0.1  # the square's outline
    assert edges[27:34, 60].any() and not edges[50:80, 50:80].any()  # on the outline, not inside

    page.click("#controlnet_cn0_refresh")
    page.locator("#controlnet_cn0_model input").click()
    page.get_by_role("option", name="e2e-canny").click()
    page.locator("#controlnet_prompt textarea").fill("a large red square in the center on a blue background")
    _set_number(page, "controlnet_steps", STEPS)
    _set_number(page, "controlnet_seed", SEED)
    page.click("#controlnet_generate")
    page.wait_for_selector("#controlnet_gallery img", state="visible", timeout=GENERATE_TIMEOUT_MS)
    page.wait_for_function(
        "() => (document.querySelector('#controlnet_infotext')?.innerText || '').includes('ControlNet 0:')"
    )
    infotext = page.inner_text("#controlnet_infotext")
    assert "Module: canny, Model: e2e-canny [" in infotext and "Control Mode: Balanced" in infotext
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "controlnet.png"), full_page=True)


def test_upscaling_tab_enlarges_a_sent_picture(page, atelier_server):
    _generate(page, "a small yellow circle at the top on a black background")
    page.click("#txt2img_send_to_extras")
    page.locator("#extras_image img").first.wait_for(state="visible")
    _set_number(page, "extras_upscaling_resize", 2)
    page.click("#extras_generate")
    page.wait_for_selector("#extras_gallery img", state="visible", timeout=GENERATE_TIMEOUT_MS)
    page.wait_for_function(
        "() => (document.querySelector('#extras_infotext')?.innerText || '').includes('Postprocess upscaler')"
    )
    infotext = page.inner_text("#extras_infotext")
    assert "Postprocess upscale by: 2" in infotext and "Seed:" in infotext  # the source's parameters stay
    src = page.locator("#extras_gallery img").first.get_attribute("src")
    from io import BytesIO

    from PIL import Image

    body = page.request.get(src if src.startswith("http") else atelier_server.url + src).body()
    assert Image.open(BytesIO(body)).size == (2 * SIZE, 2 * SIZE)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "upscaling.png"), full_page=True)


def test_xyz_plot_of_three_samplers_by_two_step_counts_shows_the_grid(page, atelier_server):
    """X/Y/Z plot from the Script dropdown: the sampler axis picked from its dropdown, the steps
    typed as a list; the grid comes back first, with the legend, and its infotext names the axes."""
    page.locator("#txt2img_prompt textarea").fill("a large red circle at the top left on a blue background")
    for elem_id, value in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_seed", SEED)):
        _set_number(page, elem_id, value)
    page.locator("#txt2img_script input").click()
    page.get_by_role("option", name="X/Y/Z plot").click()
    group = "#txt2img_script_x_y_z_plot"
    page.locator(f"{group} #xyz_x_type input").wait_for(state="visible")
    page.locator(f"{group} #xyz_x_type input").click()
    page.get_by_role("option", name="Sampler", exact=True).click()
    page.locator(f"{group} #xyz_x_values_dropdown").wait_for(state="visible")
    for sampler in ("Euler", "Euler a", "DDIM"):
        page.locator(f"{group} #xyz_x_values_dropdown input").click()
        page.get_by_role("option", name=sampler, exact=True).click()
    page.locator(f"{group} #xyz_y_type input").click()
    page.get_by_role("option", name="Steps", exact=True).click()
    page.locator(f"{group} #xyz_y_values textarea, {group} #xyz_y_values input").first.fill("2, 3")
    page.click("#txt2img_generate")
    page.wait_for_function(
        "() => (document.querySelector('#txt2img_infotext')?.innerText || '').includes('X/Y/Z plot')",
        timeout=GENERATE_TIMEOUT_MS,
    )
    infotext = page.inner_text("#txt2img_infotext")
    assert "X Type: Sampler" in infotext and "Y Type: Steps" in infotext
    assert 'X Values: "Euler, Euler a, DDIM"' in infotext and "Y Values:" in infotext
    src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    from io import BytesIO

    from PIL import Image

    grid = Image.open(
        BytesIO(page.request.get(src if src.startswith("http") else atelier_server.url + src).body())
    )
    assert grid.width >= 3 * 64 and grid.height >= 2 * 64  # 3 columns × 2 rows of 64 px, plus the legend
    assert grid.width > 3 * 64 or grid.height > 2 * 64  # the legend is there
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    grid.save(ARTIFACTS / "xyz-grid.png")
    page.screenshot(path=str(ARTIFACTS / "xyz-plot.png"), full_page=True)


def test_the_page_is_protected_against_rebinding_and_cross_site_requests(browser, atelier_server):
    """The page carries the protective headers; a browser that resolves a stranger's name to this
    machine (DNS rebinding) gets a 403 page; a request a foreign page sends is refused."""
    from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

    context = browser.new_context()
    try:
        answer = context.new_page().goto(atelier_server.url)
        assert answer.status == 200
        for name, value in PROTECTIVE_HEADERS:
            assert answer.headers.get(name.decode()) == value.decode()
    finally:
        context.close()

    port = atelier_server.url.rsplit(":", 1)[1]
    rebinding = browser.browser_type.launch(
        executable_path=str(CHROMIUM),
        args=[
            *CHROMIUM_ARGS,
            "--host-resolver-rules=MAP rebind.test 127.0.0.1",
            # Let the foreign page's request reach the server, so the server's own answer is seen.
            "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
            "PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests",
        ],
    )
    try:
        page = rebinding.new_page()
        refused = page.goto(f"http://rebind.test:{port}/")
        assert refused.status == 403 and "--allowed-hosts" in page.inner_text("body")

        page.route(
            "http://evil.test/**",
            lambda route: route.fulfill(status=200, content_type="text/html", body="<p>a page you visit</p>"),
        )
        page.goto("http://evil.test/")
        with page.expect_response(lambda r: "queue/join" in r.url, timeout=30_000) as sent:
            page.evaluate(
                "url => fetch(url + '/gradio_api/queue/join', {method: 'POST', mode: 'no-cors', body: '{}'})"
                ".catch(() => null)",
                atelier_server.url,
            )
        assert sent.value.status == 403 and sent.value.request.headers.get("origin") == "http://evil.test"
    finally:
        rebinding.close()
