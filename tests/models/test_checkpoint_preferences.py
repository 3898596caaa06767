"""A checkpoint's preferred sampler settings (`<stem>.json` beside it): reading the file, the order
in which a job's value, the user's setting and the preference win, and the engine applying them."""

from __future__ import annotations

import json

import pytest

from engine.models.preferences import metadata_path, preferences_or_empty, read_preferences
from engine.schema.infotext import parse_infotext
from engine.schema.params import GenerationParams
from engine.schema.sampler_params import A1111_DEFAULTS, resolve_overrides
from engine.schema.settings import Settings


def _checkpoint(tmp_path, metadata) -> object:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        (tmp_path / "model.json").write_text(text, encoding="utf-8")
    return weights


def test_the_file_beside_a_checkpoint_file_or_folder(tmp_path):
    weights = _checkpoint(tmp_path, None)
    assert metadata_path(weights) == tmp_path / "model.json"
    folder = tmp_path / "diffusers-model"
    folder.mkdir()
    assert metadata_path(folder) == tmp_path / "diffusers-model.json"


def test_reads_typed_values_and_ignores_the_other_metadata(tmp_path):
    weights = _checkpoint(
        tmp_path,
        {
            "description": "A1111's own keys stay where they are",
            "vae": "Automatic",
            "sampler settings": {
                "s_min_uncond": "2.5",
                "s_min_uncond_all": True,
                "CLIP_stop_at_last_layers": 2,
            },
        },
    )
    assert read_preferences(weights) == {
        "s_min_uncond": 2.5,
        "s_min_uncond_all": True,
        "CLIP_stop_at_last_layers": 2,
    }


def test_no_file_or_no_key_prefers_nothing(tmp_path):
    assert read_preferences(_checkpoint(tmp_path, None)) == {}
    assert read_preferences(_checkpoint(tmp_path, {"description": "no settings"})) == {}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("{not json", "not readable JSON"),
        ({"sampler settings": [1, 2]}, "must be an object"),
        ({"sampler settings": {"s_min_uncund": 3}}, "unknown sampler settings ['s_min_uncund']"),
        ({"sampler settings": {"s_min_uncond": -1}}, "s_min_uncond"),
        ({"sampler settings": {"uni_pc_variant": "bh9"}}, "uni_pc_variant"),
    ],
)
def test_a_broken_file_is_a_clear_error_and_is_ignored_by_jobs(tmp_path, metadata, message, caplog):
    weights = _checkpoint(tmp_path, metadata)
    with pytest.raises(ValueError, match="model.json") as caught:
        read_preferences(weights)
    assert message in str(caught.value)
    assert preferences_or_empty(weights) == {}
    assert "model.json" in caplog.text


def test_a_job_value_then_a_chosen_setting_then_the_preference_win():
    preferred = {"s_min_uncond": 3.0, "s_min_uncond_all": True}
    job = GenerationParams(prompt="x")
    resolved = resolve_overrides(job, Settings(), preferred)
    assert resolved["s_min_uncond"] == 3.0 and resolved["s_min_uncond_all"] is True
    assert resolved["eta_ancestral"] == A1111_DEFAULTS["eta_ancestral"]  # not preferred: the setting

    chosen = resolve_overrides(job, Settings(s_min_uncond=1.0), preferred)
    assert chosen["s_min_uncond"] == 1.0 and chosen["s_min_uncond_all"] is True

    own = GenerationParams(prompt="x", s_min_uncond=0.0)
    assert "s_min_uncond" not in resolve_overrides(own, Settings(), preferred)  # the job's 0 stays
    assert resolve_overrides(job, Settings(), None)["s_min_uncond"] == 0.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from engine.service.facade import Engine

    return Engine(data_dir=tmp_path_factory.mktemp("data"), device="cpu", load_extensions=False)


def _run(engine, **kw):
    params = GenerationParams(prompt="a red circle", steps=2, seed=1, width=64, height=64, **kw)
    job = engine.submit_txt2img(params, save_images=False)
    job.wait()
    assert job.error is None, job.error
    return job.result.params, parse_infotext(job.result.infotexts[0])


def test_the_engine_applies_the_builtin_models_preference_and_writes_it_to_the_infotext(engine):
    assert engine.preferred_sampler_settings() == {"s_min_uncond": 3.0, "s_min_uncond_all": True}
    params, info = _run(engine)
    assert (params.s_min_uncond, params.s_min_uncond_all) == (3.0, True)
    assert (info["NGMS"], info["NGMS all steps"]) == ("3", "True")


def test_a_users_setting_a_jobs_value_and_the_switch_take_precedence(engine):
    try:
        engine.update_settings(s_min_uncond=1.5)
        params, _ = _run(engine)
        assert (params.s_min_uncond, params.s_min_uncond_all) == (1.5, True)

        engine.update_settings(s_min_uncond=0.0, use_checkpoint_preferences=False)
        params, info = _run(engine)
        assert (params.s_min_uncond, params.s_min_uncond_all) == (0.0, False)
        assert "NGMS" not in info
    finally:
        engine.update_settings(s_min_uncond=0.0, use_checkpoint_preferences=True)
    params, info = _run(engine, s_min_uncond=0.0)  # e.g. pasted from an infotext, or the API's override
    assert (params.s_min_uncond, params.s_min_uncond_all) == (0.0, True)


def test_the_sampler_settings_tab_says_what_the_checkpoint_prefers_and_whether_it_is_used():
    from tests.fakes.fake_engine import FakeEngine
    from ui.tabs.settings import preferences_html

    engine = FakeEngine(checkpoints=["plain", "tiny", "broken"])
    engine.preferences = {
        "tiny": {"s_min_uncond": 3.0, "s_min_uncond_all": True},
        "broken": ValueError("broken.json: not readable JSON"),
    }
    assert preferences_html(engine, "plain") == ""
    used = preferences_html(engine, "tiny")
    assert "tiny prefers NGMS: 3, NGMS all steps: True: used for each" in used
    assert "atelier-msg-info" in used
    engine.update_settings(use_checkpoint_preferences=False)
    assert "Not used" in preferences_html(engine, "tiny")
    broken = preferences_html(engine, "broken")
    assert "atelier-msg-error" in broken and "broken.json: not readable JSON" in broken


def test_script_cells_take_the_preferences_of_their_own_checkpoint(tmp_path_factory, tiny_single_file):
    """An X/Y/Z plot over checkpoints: the job's parameters leave what a preference could fill unset,
    and each cell is resolved for its own checkpoint (the built-in one prefers NGMS 3, tiny nothing)."""
    from engine.service.facade import Engine

    engine = Engine(
        data_dir=tmp_path_factory.mktemp("data"),
        models_dirs=[tiny_single_file.parent],
        device="cpu",
        load_extensions=False,
    )
    assert engine.preferred_sampler_settings("tiny") == {}  # found, and states no preference
    engine.update_settings(eta_ancestral=0.5)  # a value the user chose is fixed for the whole job
    base = engine._resolved(GenerationParams(prompt="x"), for_script=True)
    assert base.s_min_uncond is None and base.eta_ancestral == 0.5
    on_builtin = engine._resolved(base.model_copy(update={"checkpoint": "atelier-tiny"}))
    assert (on_builtin.s_min_uncond, on_builtin.s_min_uncond_all, on_builtin.eta_ancestral) == (
        3.0,
        True,
        0.5,
    )
    on_tiny = engine._resolved(base.model_copy(update={"checkpoint": "tiny"}))
    assert (on_tiny.s_min_uncond, on_tiny.s_min_uncond_all, on_tiny.eta_ancestral) == (0.0, False, 0.5)
