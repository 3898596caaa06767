"""ControlNet memory: a preprocessor's detector is built once and kept (not once per map, which is
twice a job with hires fix), and cached ControlNet models leave the device when the checkpoint
changes: set aside in CPU RAM where they still fit the new UNet, dropped where they do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.controlnet import models as cn_models
from engine.controlnet import preprocessors
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams
from tests.fakes.tiny_models import load_tiny, tiny_components, tiny_controlnet

SIZE = 64
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ControlNet")
    tiny_controlnet(model.unet, 1).save_pretrained(folder / "edges")
    return folder


@pytest.fixture
def builds(monkeypatch) -> list[Path]:
    """The ControlNet files built from disk, in order."""
    built: list[Path] = []
    original = cn_models.build

    def counting(path: Path, unet: Any, checkpoint: str | None = None) -> Any:
        built.append(path)
        return original(path, unet, checkpoint)

    monkeypatch.setattr(cn_models, "build", counting)
    return built


@pytest.fixture
def detectors(monkeypatch) -> list[str]:
    """The detectors built (by preprocessor name), with no detector kept from before the test."""
    built: list[str] = []
    original = preprocessors._detector

    def counting(spec: preprocessors.Preprocessor, annotators: Path | None) -> Any:
        built.append(spec.name)
        return original(spec, annotators)

    monkeypatch.setattr(preprocessors, "_detector", counting)
    preprocessors.free_annotators()
    yield built
    preprocessors.free_annotators()


def control_picture() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(image).rectangle((12, 12, 40, 40), outline="white", width=3)
    return image


def record_moves(monkeypatch, cn) -> list[tuple]:
    """The arguments of every `.to(...)` call on the model `cn` (on the CPU the move itself
    changes nothing to see, so the call is what tells where it was sent)."""
    calls: list[tuple] = []
    original = type(cn).to

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(cn, *args, **kwargs)

    monkeypatch.setattr(cn, "to", recording)
    return calls


# -- annotators -------------------------------------------------------------------------------------


def test_a_detector_is_built_once_for_every_map(detectors) -> None:
    picture = control_picture()
    first = preprocessors.run("canny", picture, SIZE)
    second = preprocessors.run("canny", picture, 2 * SIZE, device="cpu")  # the same key as None
    assert detectors == ["canny"]
    assert first.size == (SIZE, SIZE) and second.size == (2 * SIZE, 2 * SIZE)
    assert np.asarray(first).max() == 255  # a real edge map, from the kept detector
    preprocessors.run("shuffle", picture, SIZE)
    assert detectors == ["canny", "shuffle"]  # each preprocessor has its own
    assert len(preprocessors.ANNOTATORS) == 2
    preprocessors.free_annotators()
    assert len(preprocessors.ANNOTATORS) == 0
    preprocessors.run("canny", picture, SIZE)
    assert detectors == ["canny", "shuffle", "canny"]  # freed: built again on next use


def test_a_hires_job_builds_its_detector_once(model, folder, detectors, monkeypatch) -> None:
    maps: list[int] = []
    original = preprocessors.run

    def counting(name: str, image: Image.Image, resolution: int, *args: Any, **kwargs: Any) -> Image.Image:
        maps.append(resolution)
        return original(name, image, resolution, *args, **kwargs)

    monkeypatch.setattr(preprocessors, "run", counting)
    unit = ControlNetUnit(module="canny", model="edges", pixel_perfect=True)  # "Both": a map per pass
    params = GenerationParams(
        prompt="a red circle", steps=3, sampler_name="Euler", seed=5, width=SIZE, height=SIZE,
        enable_hr=True, hr_scale=2.0, hr_second_pass_steps=2, denoising_strength=0.6,
    )  # fmt: skip
    result = txt2img(
        model, params, control=[ControlInput(unit, control_picture())], controlnets=ControlNetLibrary(folder)
    )
    assert result.images[0].size == (2 * SIZE, 2 * SIZE)
    assert maps == [SIZE, 2 * SIZE]  # a map for each pass, at its own size
    assert detectors == ["canny"]  # from one detector


class FakeNetworkDetector:
    """Stands in for a controlnet_aux detector with weights (HED): counts its loads and moves."""

    loads: list[str] = []
    moves: list[str] = []

    @classmethod
    def from_pretrained(cls, folder: str, filename: str | None = None) -> FakeNetworkDetector:
        cls.loads.append(str(Path(folder) / (filename or "")))
        return cls()

    def to(self, device: Any) -> FakeNetworkDetector:
        self.moves.append(str(device))
        return self

    def __call__(self, image: np.ndarray, **kwargs: Any) -> Image.Image:
        return Image.fromarray(255 - image)


def test_a_network_detector_loads_its_weights_once_per_device(tmp_path, monkeypatch, detectors) -> None:
    import controlnet_aux

    monkeypatch.setattr(controlnet_aux, "HEDdetector", FakeNetworkDetector)
    monkeypatch.setattr(FakeNetworkDetector, "loads", [])
    monkeypatch.setattr(FakeNetworkDetector, "moves", [])
    (tmp_path / "ControlNetHED.pth").write_bytes(b"weights")
    picture = control_picture()
    for _ in range(2):
        out = preprocessors.run("softedge_hed", picture, SIZE, annotators=tmp_path)
    assert np.array_equal(np.asarray(out), 255 - np.asarray(picture))
    assert FakeNetworkDetector.loads == [str(tmp_path / "ControlNetHED.pth")]
    assert FakeNetworkDetector.moves == []  # built on the CPU, where it stays
    for _ in range(2):
        preprocessors.run("softedge_hed", picture, SIZE, annotators=tmp_path, device="meta")
    assert len(FakeNetworkDetector.loads) == 2  # another device: its own copy, loaded once
    assert FakeNetworkDetector.moves == ["meta"]


# -- ControlNet models across checkpoint switches ----------------------------------------------------


def test_a_checkpoint_switch_sets_cached_controlnets_aside_in_cpu_ram(
    model, folder, tiny_parts_b, builds, monkeypatch
) -> None:
    library = ControlNetLibrary(folder)
    cn, _ = library.load("edges", model.unet, CPU, torch.float32)
    moves = record_moves(monkeypatch, cn)
    assert library.load("edges", model.unet, CPU, torch.float32)[0] is cn
    library.follow_checkpoint(model.unet)  # the same checkpoint again: nothing moves
    assert moves == [] and len(builds) == 1

    other = tiny_parts_b.unet  # another checkpoint of the same kind: the ControlNet still fits it
    library.follow_checkpoint(other)
    assert moves == [("cpu",)]
    library.follow_checkpoint(other)
    assert moves == [("cpu",)]  # set aside once

    again, _ = library.load("edges", other, CPU, torch.float32)
    assert again is cn and len(builds) == 1  # from RAM, not from disk
    assert moves == [("cpu",), (CPU,)]  # back to the job's device


def test_a_load_for_another_checkpoint_sets_the_others_aside_too(
    model, folder, tiny_parts_b, builds, monkeypatch
):
    """Without being told of the switch, the library sees it in the UNet the next job passes."""
    library = ControlNetLibrary(folder)
    cn, _ = library.load("edges", model.unet, CPU, torch.float32)
    moves = record_moves(monkeypatch, cn)
    assert library.load("edges", tiny_parts_b.unet, CPU, torch.float32)[0] is cn
    assert moves == [("cpu",), (CPU,)]
    assert len(builds) == 1


def test_controlnets_for_another_kind_of_unet_are_dropped(model, folder, builds, monkeypatch) -> None:
    library = ControlNetLibrary(folder)
    cn, _ = library.load("edges", model.unet, CPU, torch.float32)
    moves = record_moves(monkeypatch, cn)
    released: list[torch.device] = []
    monkeypatch.setattr(cn_models, "release_memory", released.append)
    xl = tiny_components(seed=0, family="sdxl").unet  # an SDXL checkpoint: an SD ControlNet cannot steer it
    library.follow_checkpoint(xl)
    assert moves == []  # not moved: dropped, its memory freed
    assert released == [CPU]
    with pytest.raises(ValueError, match="SDXL"):
        library.load("edges", xl, CPU, torch.float32)
    library.follow_checkpoint(model.unet)
    rebuilt, _ = library.load("edges", model.unet, CPU, torch.float32)
    assert rebuilt is not cn and len(builds) == 3  # read from disk again: it was not kept
