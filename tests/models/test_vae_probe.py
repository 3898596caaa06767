"""A chosen VAE must decode the checkpoint's latents: one of another latent space (an SD 1.x VAE on
SDXL) is a clear error, a fine-tune of the same space is accepted, and without evidence (an own VAE
that reconstructs nothing) nothing is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models.manager import ModelManager
from engine.models.vae_probe import EVIDENCE_DB, LatentProbe, probe_picture
from tests.fakes.tiny_models import tiny_components, write_single_file
from tests.fakes.vaes import builtin_vae, fine_tuned, other_latent_space, write_vae_file


@pytest.fixture(scope="module")
def trained():
    return builtin_vae()


def _round_trip_psnr(vae) -> float:
    probe = LatentProbe.of(vae)
    assert probe is not None
    return probe.own_psnr


def test_the_other_space_is_a_good_vae_that_reads_latents_differently(trained):
    """The stand-in for "an SD 1.x VAE" is no worse a VAE: its own round trip equals the original's."""
    other = other_latent_space(trained)
    assert _round_trip_psnr(other) == pytest.approx(_round_trip_psnr(trained), abs=0.05)
    picture = probe_picture()
    with torch.no_grad():
        mine = trained.encode(picture).latent_dist.mode()
        theirs = other.encode(picture).latent_dist.mode()
    assert not torch.allclose(mine, theirs, atol=0.1)


def test_a_vae_of_another_latent_space_is_refused(trained):
    probe = LatentProbe.of(trained)
    assert probe is not None and probe.own_psnr >= EVIDENCE_DB
    with pytest.raises(
        ValueError, match=r"VAE sd1-vae\.safetensors does not decode xl-base's latents"
    ) as err:
        probe.check(other_latent_space(trained), "sd1-vae.safetensors", "xl-base")
    assert "another model family" in str(err.value)
    assert probe.psnr_through(other_latent_space(trained)) < probe.own_psnr - 6


def test_the_own_vae_and_a_fine_tune_pass(trained):
    probe = LatentProbe.of(trained)
    probe.check(trained, "same.safetensors", "model")
    tuned = fine_tuned(trained)
    assert abs(probe.psnr_through(tuned) - probe.own_psnr) < 1.0
    probe.check(tuned, "ft.safetensors", "model")


def test_no_evidence_no_refusal():
    """Random test VAEs reconstruct nothing: the checkpoint's own probe is None, any VAE loads."""
    assert LatentProbe.of(tiny_components(seed=0).vae) is None


def test_nan_output_is_a_miss(trained):
    broken = fine_tuned(trained)
    with torch.no_grad():
        broken.decoder.conv_out.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="does not decode"):
        LatentProbe.of(trained).check(broken, "nan.safetensors", "model")


@pytest.fixture(scope="module")
def xl_with_trained_vae(tmp_path_factory, trained) -> Path:
    """An SDXL checkpoint whose VAE reconstructs (the built-in one), a VAE of another latent space
    and a fine-tune in models/VAE."""
    root = tmp_path_factory.mktemp("vae-check")
    parts = tiny_components(seed=0, family="sdxl")
    parts.vae = trained
    write_single_file(parts, root / "models" / "Stable-diffusion" / "xl-base.safetensors")
    write_vae_file(other_latent_space(trained), root / "models" / "VAE" / "sd1-vae.safetensors")
    write_vae_file(fine_tuned(trained), root / "models" / "VAE" / "xl-ft.safetensors")
    return root


def test_the_manager_refuses_a_vae_of_another_family_on_sdxl(xl_with_trained_vae):
    manager = ModelManager(root=xl_with_trained_vae, device="cpu")
    own = manager.get("xl-base")
    assert own.latent_probe is not None
    with pytest.raises(ValueError, match="sd1-vae.safetensors does not decode xl-base's latents"):
        manager.get("xl-base", vae="sd1-vae")
    assert manager.current is own  # the refused VAE changed nothing
    assert manager.get("xl-base", vae="xl-ft").vae_name == "xl-ft.safetensors"
    # Straight from the loader (a fresh load with the VAE chosen), and with the check turned off.
    manager.unload()
    with pytest.raises(ValueError, match="does not decode"):
        manager.get("xl-base", vae="sd1-vae")
    assert manager.get("xl-base", vae="sd1-vae", check_vae=False).vae_name == "sd1-vae.safetensors"


def test_the_api_answers_a_vae_of_another_family_with_a_4xx(tmp_path, xl_with_trained_vae):
    from fastapi.testclient import TestClient

    from engine.cmd_args import parse_args
    from engine.service.facade import Engine
    from ui.server import build_app

    engine = Engine(
        data_dir=tmp_path, models_dirs=[xl_with_trained_vae / "models"], device="cpu", load_extensions=False
    )
    app = build_app(engine, parse_args(["--api", "--data-dir", str(tmp_path)]))
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 1}
    with TestClient(app, base_url="http://127.0.0.1") as client:

        def run(vae: str):
            settings = {"sd_model_checkpoint": "xl-base", "sd_vae": vae}
            return client.post("/sdapi/v1/txt2img", json={**body, "override_settings": settings})

        refused = run("sd1-vae.safetensors")
        assert 400 <= refused.status_code < 500, refused.text
        assert "does not decode xl-base's latents" in refused.json()["detail"]
        assert run("xl-ft.safetensors").status_code == 200  # the server goes on, a fitting VAE works
        engine.update_settings(sd_vae_check_latents=False)
        assert run("sd1-vae.safetensors").status_code == 200  # the user's call, once turned off
