"""Shared fixtures. No test may reach a model hub: offline mode is forced before anything imports
huggingface_hub, and every model comes from the tiny seeded factory in tests/fakes/tiny_models.py or is
the built-in model the project trained itself (models/builtin/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Set at conftest import, before any test module imports huggingface_hub (which reads them once).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:  # imported lazily below: UI-only test runs need not pay for torch/diffusers
    from tests.fakes.tiny_models import TinyComponents


@pytest.fixture(scope="session")
def tiny_parts() -> TinyComponents:
    """Tiny SD1-style components, seed 0. Shared: tests must not modify them."""
    from tests.fakes.tiny_models import tiny_components

    return tiny_components(seed=0)


@pytest.fixture(scope="session")
def tiny_parts_b() -> TinyComponents:
    """A second, different tiny model (seed 1) for switching tests."""
    from tests.fakes.tiny_models import tiny_components

    return tiny_components(seed=1)


@pytest.fixture(scope="session")
def tiny_diffusers_dir(tmp_path_factory: pytest.TempPathFactory, tiny_parts: TinyComponents) -> Path:
    """`tiny_parts` saved as a diffusers folder (read-only by convention)."""
    from tests.fakes.tiny_models import write_diffusers_folder

    return write_diffusers_folder(tiny_parts, tmp_path_factory.mktemp("diffusers") / "tiny-diffusers")


@pytest.fixture(scope="session")
def tiny_single_file(tmp_path_factory: pytest.TempPathFactory, tiny_parts: TinyComponents) -> Path:
    """`tiny_parts` as an SD-layout `tiny.safetensors` with a `tiny.config/` sidecar (read-only)."""
    from tests.fakes.tiny_models import write_single_file

    return write_single_file(tiny_parts, tmp_path_factory.mktemp("single") / "tiny.safetensors")


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    """An empty app root with the user model folders, for registry and manager tests."""
    for sub in ("Stable-diffusion", "VAE"):
        (tmp_path / "models" / sub).mkdir(parents=True)
    return tmp_path


@pytest.fixture(scope="session")
def builtin_model(tmp_path_factory: pytest.TempPathFactory):
    """The shipped built-in model, loaded on the CPU through the ordinary manager (read-only)."""
    from engine.models.builtin import BUILTIN_NAME
    from engine.models.manager import ModelManager
    from engine.models.paths import APP_ROOT

    manager = ModelManager(root=APP_ROOT, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    return manager.get(BUILTIN_NAME)


@pytest.fixture(scope="session")
def sdxl_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny SDXL checkpoints in one checkpoints folder, as users have them: "base", "refiner" and
    "inpainting" single files in the original key layout (each with a sidecar config, since the
    shipped configs are real-size), and "folder", the base as a diffusers folder (read-only)."""
    from tests.fakes.tiny_models import tiny_components, write_diffusers_folder, write_single_file

    folder = tmp_path_factory.mktemp("sdxl")
    base = tiny_components(seed=0, family="sdxl")
    return {
        "base": write_single_file(base, folder / "xl-base.safetensors"),
        "refiner": write_single_file(
            tiny_components(seed=1, family="sdxl-refiner"), folder / "xl-refiner.safetensors"
        ),
        "inpainting": write_single_file(
            tiny_components(seed=2, family="sdxl", in_channels=9), folder / "xl-inpainting.safetensors"
        ),
        "folder": write_diffusers_folder(base, folder / "xl-folder"),
    }
