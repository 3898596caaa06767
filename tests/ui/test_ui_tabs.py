"""The whole page builds on a stub engine, and the PNG Info / Settings / checkpoint handlers."""

from __future__ import annotations

import gradio as gr
from PIL import Image, PngImagePlugin

from engine.schema.params import MAX_STEPS
from tests.fakes.fake_engine import FakeEngine, fake_infotext
from ui.app import build_ui, page_kwargs
from ui.handlers.txt2img import build_params
from ui.tabs.png_info import SEND_FIELDS, infotext_to_fields, show_png_info
from ui.tabs.settings import apply_settings, setting_names
from ui.widgets.quicksettings import change_checkpoint

INFOTEXT = (
    "a red circle\nNegative prompt: blurry\n"
    "Steps: 7, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 1234, Size: 128x192, Model: builtin"
)


def _by_id(demo: gr.Blocks) -> dict[str, gr.components.Component]:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_build_ui_on_a_stub_engine_without_loading_a_model():
    engine = FakeEngine()
    demo = build_ui(engine)
    assert isinstance(demo, gr.Blocks) and demo.title == "Atelier"
    assert engine.loaded is None  # building the page must not load a checkpoint (fast start-up)
    ids = _by_id(demo)
    for elem_id in (
        "txt2img_prompt",
        "txt2img_generate",
        "txt2img_interrupt",
        "txt2img_skip",
        "txt2img_gallery",
        "txt2img_infotext",
        "txt2img_progress",
        "pnginfo_image",
        "pnginfo_send_txt2img",
        "settings_apply",
        "setting_sd_model_checkpoint",
    ):
        assert elem_id in ids, elem_id
    # Slider ranges come from the GenerationParams schema, sizes from the model.
    assert ids["txt2img_steps"].maximum == MAX_STEPS
    assert ids["txt2img_width"].step == 8 and ids["txt2img_width"].value == 128
    assert ids["setting_sd_model_checkpoint"].value == "builtin [0000000000]"
    for name in setting_names():
        assert f"setting_{name}" in ids


def test_page_load_sends_only_settings_changed_since_the_page_was_built():
    engine = FakeEngine()
    demo = build_ui(engine)
    (on_page_load,) = [f.fn for f in demo.fns.values() if f.fn.__name__ == "on_page_load"]
    skip = gr.skip()  # an empty update: the component keeps its value
    assert all(value == skip for value in on_page_load())
    engine.update_settings(default_steps=33)
    sent = [value for value in on_page_load() if value != skip]
    assert sent == [33, 33]  # the txt2img steps slider and the Settings tab's field


def test_server_address_and_page_follow_the_flags():
    import argparse

    from ui.server import address

    assert address(argparse.Namespace(listen=False, port=7861)) == ("127.0.0.1", 7861)
    assert address(argparse.Namespace(listen=True, port=None)) == ("0.0.0.0", 7860)
    assert "atelier-progress" in page_kwargs(argparse.Namespace())["css"]


def _png_with(tmp_path, text: str | None):
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    path = tmp_path / "image.png"
    Image.new("RGB", (16, 16), "blue").save(path, pnginfo=info)
    return str(path)


def test_png_info_shows_raw_and_parsed_parameters(tmp_path):
    text, table = show_png_info(_png_with(tmp_path, INFOTEXT))
    assert text == INFOTEXT
    assert "<th>Steps</th><td>7</td>" in table and "<th>Seed</th><td>1234</td>" in table


def test_png_info_without_parameters_or_not_an_image(tmp_path):
    text, table = show_png_info(_png_with(tmp_path, None))
    assert text == "" and "No generation parameters" in table
    junk = tmp_path / "notes.png"
    junk.write_text("hello")
    text, table = show_png_info(str(junk))
    assert text == "" and "cannot read notes.png as an image" in table
    assert show_png_info(None) == ("", "")


def test_send_to_txt2img_values_feed_the_txt2img_fields():
    fields, overrides = infotext_to_fields(INFOTEXT)
    values = dict(zip(SEND_FIELDS, fields, strict=True))
    assert values == {
        "prompt": "a red circle",
        "negative_prompt": "blurry",
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "steps": 7,
        "cfg_scale": 5.5,
        "seed": 1234,
        "width": 128,
        "height": 192,
    }
    # ...and what the fake engine writes round-trips through the same path.
    params = build_params("x", "", "Euler", "Karras", 9, 3.0, 77, 64, 72, 1, 1)
    sent = dict(zip(SEND_FIELDS, infotext_to_fields(fake_infotext(params, 77))[0], strict=True))
    assert (sent["steps"], sent["seed"], sent["width"], sent["height"]) == (9, 77, 64, 72)


def test_send_to_txt2img_fills_the_hires_fields():
    from ui.handlers.txt2img import HIRES_FIELDS

    text = INFOTEXT + (
        ", Denoising strength: 0.45, Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Lanczos,"
        " Hires sampler: Euler a"
    )
    names = (*SEND_FIELDS, *HIRES_FIELDS)
    values = dict(zip(names, infotext_to_fields(text, names)[0], strict=True))
    assert values["enable_hr"] is True and values["denoising_strength"] == 0.45
    assert (values["hr_scale"], values["hr_second_pass_steps"], values["hr_upscaler"]) == (1.5, 4, "Lanczos")
    assert values["hr_sampler_name"] == "Euler a"
    assert values["hr_scheduler"] == "Use same scheduler"  # what the dropdown calls "not set"
    # The values go back into a job unchanged, and a text without hires keys turns hires off.
    params = build_params(
        "x", "", "Euler", "Karras", 9, 3.0, 77, 64, 64, 1, 1, [], [], *list(values.values())[9:]
    )
    assert params.enable_hr and params.hr_scale == 1.5 and params.hr_scheduler is None
    plain = dict(zip(names, infotext_to_fields(INFOTEXT, names)[0], strict=True))
    assert plain["enable_hr"] is False and plain["hr_sampler_name"] == "Use same sampler"


def test_send_to_txt2img_turns_sampler_parameters_into_override_entries():
    text = INFOTEXT + ", Eta: 0.5, UniPC variant: bh2, Sigma churn: 2, Discard penultimate sigma: True"
    _fields, overrides = infotext_to_fields(text)
    assert overrides == [
        "Eta: 0.5", "Sigma churn: 2", "Discard penultimate sigma: True", "UniPC variant: bh2"
    ]  # fmt: skip
    # The entries go back into a job unchanged: the txt2img Generate path reads them.
    params = build_params("x", "", "Euler a", "Automatic", 9, 3.0, 77, 64, 64, 1, 1, overrides)
    assert (params.eta_ancestral, params.s_churn) == (0.5, 2.0)
    assert params.always_discard_next_to_last_sigma is True
    assert params.uni_pc_variant == "bh2" and params.eta_ddim is None  # unset: the settings' value
    assert infotext_to_fields(INFOTEXT)[1] == []  # nothing to override: the dropdown stays hidden


def test_send_to_txt2img_without_text_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="no parameters"):
        infotext_to_fields("  ")


def test_apply_settings_saves_changes_and_reports_errors():
    engine = FakeEngine()
    names = setting_names()
    values = [getattr(engine.settings, n) for n in names]
    assert "Nothing changed" in apply_settings(engine, names, values)

    values[names.index("default_steps")] = 30.0  # gr.Number gives floats
    message = apply_settings(engine, names, values)
    assert "Saved 1 setting(s): default_steps" in message and engine.settings.default_steps == 30

    values[names.index("default_steps")] = 0
    message = apply_settings(engine, names, values)
    assert "Settings not saved: default_steps: must be greater than or equal to 1" in message
    assert engine.settings.default_steps == 30


def test_change_checkpoint_reports_a_bad_title_and_keeps_the_current_one():
    engine = FakeEngine(checkpoints=["a [1]", "b [2]"])
    assert change_checkpoint(engine, "b [2]") == ("b [2]", None)
    loaded, message = change_checkpoint(engine, "missing [3]")
    assert loaded == "b [2]" and "Could not load missing [3]" in message
