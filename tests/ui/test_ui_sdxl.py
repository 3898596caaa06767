"""The UI's SDXL pieces: the Refiner accordion's values reach the job, the size picker offers the
family's sizes, and a checkpoint change proposes its size (and Flux its CFG scale and steps)
without overwriting the user's."""

from __future__ import annotations

import gradio as gr

from tests.fakes.fake_engine import FakeEngine
from tests.fakes.ui_values import TXT2IMG_VALUES
from ui.handlers.txt2img import OPTIONAL_FIELDS, PARAM_FIELDS, build_params
from ui.widgets.size_picker import parse_size, proposed_updates, size_label


def _with_refiner(checkpoint, switch_at) -> tuple:
    optional = {"refiner_checkpoint": checkpoint, "refiner_switch_at": switch_at}
    count = len(PARAM_FIELDS) - len(OPTIONAL_FIELDS) - len(TXT2IMG_VALUES)
    return (*TXT2IMG_VALUES, *([None] * count), *(optional.get(name) for name in OPTIONAL_FIELDS))


def test_the_refiner_accordion_reaches_the_job():
    params = build_params(*_with_refiner("xl-refiner", 0.7))
    assert (params.refiner_checkpoint, params.refiner_switch_at, params.uses_refiner) == (
        "xl-refiner",
        0.7,
        True,
    )
    off = build_params(*_with_refiner("None", 0.7))  # the dropdown's "None" is no refiner
    assert off.refiner_checkpoint is None and not off.uses_refiner
    assert not build_params(*_with_refiner("xl-refiner", 1.0)).uses_refiner  # switch at 1: never


def test_size_labels_round_trip():
    assert parse_size(size_label(1216, 832)) == (1216, 832)
    assert parse_size("nonsense") is None and parse_size(None) is None


def test_sdxl_proposes_1024_and_its_buckets_and_keeps_the_user_s_size():
    engine = FakeEngine(checkpoints=["builtin [0000000000]", "juggernaut-xl [1111111111]"])
    assert engine.size_choices()[0] == 128
    engine.load_checkpoint("juggernaut-xl [1111111111]")
    # tab 1 still shows the built-in model's 128², tab 2 has the user's own 96×160
    native, pickers, updates, messages = proposed_updates(engine, 128, [(128, 128), (96, 160)])
    assert native == 1024
    assert updates[:2] == [1024, 1024]
    assert all(isinstance(u, type(gr.skip())) for u in updates[2:])  # the user's size stays
    assert messages == ["Kept your size 96×160; this checkpoint proposes 1024×1024"]
    labels = pickers[0]["choices"]
    assert "1024×1024" in labels and "1216×832" in labels and "832×1216" in labels


def test_sd1_sizes_are_the_same_shapes_at_its_own_size():
    from engine.models.families import FAMILIES

    sizes = FAMILIES["sd1"].sizes(512)
    assert sizes[0] == (512, 512) and (576, 448) in sizes and all(w % 8 == h % 8 == 0 for w, h in sizes)


def test_the_progress_bar_shows_the_refiner_switch():
    from engine.service.jobs import Progress
    from ui.handlers.progress import progress_html

    progress = Progress(job_step=9, job_steps=10, batches=1, textinfo="Switched to the refiner xl in 1.2 s")
    assert "Switched to the refiner xl in 1.2 s" in progress_html(progress)


def test_png_info_sends_the_refiner_to_the_accordion():
    from ui.tabs.png_info import infotext_to_fields

    text = "a cat\nSteps: 20, Seed: 1, Refiner: xl-refiner [0123456789], Refiner switch at: 0.6"
    names = ("prompt", "refiner_checkpoint", "refiner_switch_at")
    values, _ = infotext_to_fields(text, names)
    assert values == ("a cat", "xl-refiner [0123456789]", 0.6)
    values, _ = infotext_to_fields("a cat\nSteps: 20, Seed: 1", names)
    assert values[1] == "None"  # no refiner: the dropdown's own "None"


def test_flux_proposes_cfg_1_schnell_4_steps_and_the_user_s_values_stay():
    from ui.widgets.size_picker import proposed_values

    engine = FakeEngine(
        checkpoints=["builtin [0000000000]", "flux-dev [2222222222]", "flux-schnell [3333333333]"]
    )
    defaults = engine.generation_proposal()
    settings = engine.settings
    assert defaults == {"cfg_scale": settings.default_cfg_scale, "steps": settings.default_steps}
    engine.load_checkpoint("flux-dev [2222222222]")
    cfg, steps = defaults["cfg_scale"], defaults["steps"]
    # tab 1 still shows the defaults, tab 2 has the user's own CFG 4
    proposal, updates = proposed_values(engine, defaults, [(cfg, steps), (4.0, steps)])
    assert proposal == {"cfg_scale": 1.0, "steps": steps}
    assert updates[0] == 1.0 and isinstance(updates[1], type(gr.skip()))  # steps: nothing new
    assert all(isinstance(u, type(gr.skip())) for u in updates[2:])  # the user's CFG stays
    engine.load_checkpoint("flux-schnell [3333333333]")
    proposal, updates = proposed_values(engine, {"cfg_scale": 1.0, "steps": steps}, [(1.0, steps)])
    assert proposal == {"cfg_scale": 1.0, "steps": 4} and updates[1] == 4
    engine.load_checkpoint("builtin [0000000000]")  # back: the Settings' defaults again
    assert proposed_values(engine, proposal, [(1.0, 4)])[1] == [cfg, steps]
