"""ControlNet on tiny seeded components: inert units change nothing (bit for bit), guidance
start/end and the control modes act as A1111's extension does, units compose, every file layout
loads, and missing or mismatched pieces are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.controlnet import preprocessors
from engine.controlnet.apply import ControlNetStack, prepare_units
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.pipeline import img2img as i2i
from engine.pipeline.txt2img import txt2img
from engine.schema.infotext import parse_infotext
from engine.schema.params import GenerationParams, Img2ImgParams
from tests.fakes.tiny_models import load_tiny, tiny_controlnet

SIZE = 64


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


@pytest.fixture(scope="module")
def library(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ControlNet")
    tiny_controlnet(model.unet, 1).save_pretrained(folder / "edges")
    tiny_controlnet(model.unet, 2).save_pretrained(folder / "other")
    return ControlNetLibrary(folder)


def control_picture(box=(12, 12, 40, 40)) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(image).rectangle(box, outline="white", width=3)
    return image


def unit(**kw) -> ControlNetUnit:
    return ControlNetUnit(**{"module": "none", "model": "edges", **kw})


def params(**kw) -> GenerationParams:
    base = dict(prompt="a red circle", steps=6, sampler_name="Euler", seed=5, width=SIZE, height=SIZE)
    return GenerationParams(**{**base, **kw})


def run(model, library, units, **kw):
    control = [ControlInput(u, control_picture()) for u in units]
    return txt2img(model, params(**kw), control=control, controlnets=library)


def px(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


@pytest.fixture(scope="module")
def plain(model, library):
    return px(run(model, library, []))


@pytest.mark.parametrize(
    "inert",
    [
        dict(weight=0.0),
        dict(enabled=False),
        dict(guidance_end=0.0),
        dict(guidance_start=0.5, guidance_end=0.5),
    ],
)
def test_an_inert_unit_is_bit_identical_to_none(model, library, plain, inert):
    result = run(model, library, [unit(**inert)])
    assert np.array_equal(px(result), plain)
    assert "ControlNet" not in result.infotexts[0]


def test_an_active_unit_changes_the_picture_and_writes_its_infotext(model, library, plain):
    result = run(model, library, [unit(module="canny", weight=0.8)])
    assert np.abs(px(result) - plain).mean() > 1
    info = parse_infotext(result.infotexts[0])
    entry = info["ControlNet 0"]
    assert entry.startswith("Module: canny, Model: edges [")
    for part in ("Weight: 0.8", "Resize Mode: Crop and Resize", "Processor Res: 512", "Threshold A: 100",
                 "Threshold B: 200", "Guidance Start: 0", "Guidance End: 1", "Pixel Perfect: False",
                 "Control Mode: Balanced"):  # fmt: skip
        assert part in entry


def test_guidance_window_limits_the_steps_with_control(model, library):
    calls = []
    original = ControlNetStack.__call__

    def counting(self, x, t, cond, uncond_count=0, unet_kwargs=None, t_value=None):
        out = original(self, x, t, cond, uncond_count, unet_kwargs, t_value)
        calls.append(out is not None)
        return out

    ControlNetStack.__call__ = counting
    try:
        run(model, library, [unit(guidance_start=0.0, guidance_end=0.5)], steps=10)
    finally:
        ControlNetStack.__call__ = original
    assert calls == [True] * 5 + [False] * 5  # Euler: one model call per step


@pytest.mark.parametrize(
    ("hr_option", "expected"),
    [("Both", {SIZE, 2 * SIZE}), ("Low res only", {SIZE}), ("High res only", {2 * SIZE})],
)
def test_hires_fix_controls_the_passes_the_unit_asks_for(model, library, monkeypatch, hr_option, expected):
    """The second pass sees a map made at its own size; the Hires-fix option picks the passes."""
    sizes = []
    original = ControlNetStack.__call__

    def recording(self, x, t, cond, uncond_count=0, unet_kwargs=None, t_value=None):
        sizes.extend(p.hint.shape[-1] for p in self.units)
        assert all(p.hint.shape[-2:] == tuple(s * 8 for s in x.shape[-2:]) for p in self.units)
        return original(self, x, t, cond, uncond_count, unet_kwargs, t_value)

    monkeypatch.setattr(ControlNetStack, "__call__", recording)
    hires = dict(enable_hr=True, hr_scale=2.0, hr_second_pass_steps=3, denoising_strength=0.6, steps=3)
    result = run(model, library, [unit(module="canny", hr_option=hr_option)], **hires)
    assert result.images[0].size == (2 * SIZE, 2 * SIZE)
    assert set(sizes) == expected
    info = parse_infotext(result.infotexts[0])["ControlNet 0"]
    assert ("Hr Option" in info) == (hr_option != "Both")


def test_control_modes_scale_and_mask_as_a1111(model, library):
    (p,) = prepare_units([ControlInput(unit(), control_picture())], model, library, SIZE, SIZE)
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([500.0, 500.0])
    cond = torch.randn(2, 77, 32)
    stack = ControlNetStack([p], torch.tensor([999.0, 500.0]))
    balanced_down, balanced_mid = stack(x, t, cond, uncond_count=1)

    p.unit = unit(control_mode="My prompt is more important")
    soft_down, soft_mid = stack(x, t, cond, uncond_count=1)
    count = len(soft_down) + 1
    for i, (a, b) in enumerate(zip(soft_down, balanced_down, strict=True)):
        assert torch.allclose(a, b * 0.825 ** (count - 1 - i), atol=1e-5)
    assert torch.allclose(soft_mid, balanced_mid)  # the mid block is the last: 0.825**0

    p.unit = unit(control_mode="ControlNet is more important")
    cfg_down, _ = stack(x, t, cond, uncond_count=1)
    assert all(r[0].abs().max() == 0 for r in cfg_down)  # no control on the unconditional row
    assert all(torch.allclose(r[1], s[1]) for r, s in zip(cfg_down, soft_down, strict=True))


def test_control_modes_give_different_pictures(model, library):
    pictures = [
        px(run(model, library, [unit(control_mode=m)]))
        for m in ControlNetUnit.model_fields["control_mode"].annotation.__args__
    ]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(pictures[a] - pictures[b]).mean() > 0.2


def test_two_units_compose(model, library, plain):
    one = px(run(model, library, [unit()]))
    two = px(run(model, library, [unit(), unit(model="other")]))
    other = px(run(model, library, [unit(model="other")]))
    assert np.abs(two - one).mean() > 0.5 and np.abs(two - other).mean() > 0.5
    result = run(model, library, [unit(), unit(model="other")])
    info = parse_infotext(result.infotexts[0])
    assert "ControlNet 0" in info and "ControlNet 1" in info


def test_controlnet_in_img2img_uses_the_img2img_picture(model, library):
    picture = control_picture((20, 20, 50, 50))
    p = Img2ImgParams(
        prompt="x", steps=6, sampler_name="Euler", seed=5, width=SIZE, height=SIZE, denoising_strength=0.8
    )
    without = i2i.img2img(model, p, i2i.Img2ImgInputs([picture]))
    with_cn = i2i.img2img(
        model, p, i2i.Img2ImgInputs([picture]), control=[ControlInput(unit(), None)], controlnets=library
    )
    assert np.abs(px(with_cn) - px(without)).mean() > 0.5
    assert "ControlNet 0" in with_cn.infotexts[0]


def test_only_masked_inpainting_crops_the_control_picture_like_the_picture(model, library, monkeypatch):
    """The control picture (aligned with the img2img picture, at any size) is cut to the same box."""
    maps = []
    original = i2i.control_stack
    monkeypatch.setattr(
        i2i,
        "control_stack",
        lambda m, units, s: maps.extend(u.control_map for u in units) or original(m, units, s),
    )
    picture = Image.new("RGB", (SIZE, SIZE), "grey")
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((40, 40, 55, 55), fill=255)
    guide = Image.new("RGB", (2 * SIZE, 2 * SIZE), "black")  # twice the size, white on the left half
    ImageDraw.Draw(guide).rectangle((0, 0, SIZE - 1, 2 * SIZE), fill="white")
    p = Img2ImgParams(
        **dict(prompt="x", steps=3, sampler_name="Euler", seed=5, width=SIZE, height=SIZE),
        **dict(denoising_strength=0.8, inpaint_full_res=True, inpaint_full_res_padding=0, mask_blur=0),
    )
    control = [ControlInput(unit(resize_mode="Just Resize"), guide)]
    i2i.img2img(model, p, i2i.Img2ImgInputs([picture], mask), control=control, controlnets=library)
    whole = p.model_copy(update={"inpaint_full_res": False})
    i2i.img2img(model, whole, i2i.Img2ImgInputs([picture], mask), control=control, controlnets=library)
    cropped, full = (np.asarray(m.convert("L"), dtype=np.float32) for m in maps)
    assert cropped.max() == 0  # the box around the mask lies in the black right half
    assert abs(full.mean() - 127.5) < 2  # the whole picture: half white


def test_missing_pieces_are_clear_errors(model, library):
    with pytest.raises(ValueError, match="ControlNet model not found"):
        run(model, library, [unit(model="nope")])
    with pytest.raises(ValueError, match="no control picture"):
        txt2img(model, params(), control=[ControlInput(unit(), None)], controlnets=library)
    with pytest.raises(ValueError, match="ControlNetHED.pth"):
        run(model, library, [unit(module="softedge_hed")])
    with pytest.raises(ValueError, match="guidance start"):
        unit(guidance_start=0.8, guidance_end=0.2)


def test_a_wrong_family_controlnet_is_refused(model, tmp_path):
    from diffusers import ControlNetModel

    sd2 = ControlNetModel(
        block_out_channels=(16, 32, 32), layers_per_block=1, cross_attention_dim=64, attention_head_dim=2,
        norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    )  # fmt: skip
    sd2.save_pretrained(tmp_path / "sd2-cn")
    with pytest.raises(ValueError, match="context 64 ControlNet; the loaded checkpoint is context 32"):
        run(model, ControlNetLibrary(tmp_path), [unit(model="sd2-cn")])


@pytest.mark.parametrize("layout", ["ldm", "diffusers-file", "ldm-pth"])
def test_single_files_load_like_the_folder(model, library, plain, tmp_path, layout):
    from safetensors.torch import save_file

    from engine.models.ldm_convert import controlnet_to_ldm

    cn = tiny_controlnet(model.unet, 1)
    state = {k: v.contiguous() for k, v in cn.state_dict().items()}
    if layout.startswith("ldm"):
        state = controlnet_to_ldm(state, dict(cn.config))
        assert all(k.startswith("control_model.") for k in state)
    if layout == "ldm-pth":  # a pickle: read through the restricted unpickler
        torch.save({"state_dict": state}, tmp_path / "edges.pth")
    else:
        save_file(state, tmp_path / "edges.safetensors")
    from_file = px(run(model, ControlNetLibrary(tmp_path), [unit()]))
    from_folder = px(run(model, library, [unit()]))
    assert np.array_equal(from_file, from_folder)


def test_a_corrupt_file_is_a_clear_error(model, tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid .safetensors"):
        run(model, ControlNetLibrary(tmp_path), [unit(model="broken")])


def test_canny_finds_the_outline():
    image = Image.new("RGB", (128, 128), "blue")
    ImageDraw.Draw(image).ellipse((32, 32, 96, 96), fill="yellow")
    edges = np.asarray(preprocessors.run("canny", image, 128)) > 0
    assert edges[64, 30:36].any() and not edges[60:68, 60:68].any() and not edges[:20, :20].any()


def test_preprocessor_helpers():
    assert preprocessors.thresholds("canny", None, 50) == (100, 50)
    assert preprocessors.thresholds("shuffle", 1, 2) == (None, None)
    image = Image.new("RGB", (300, 200))
    assert preprocessors.pixel_perfect_resolution(image, 512, 512, "Crop and Resize") == 512
    assert preprocessors.pixel_perfect_resolution(image, 512, 512, "Resize and Fill") == 341
    assert preprocessors.run("tile_resample", image, 512, a=2.0).size == (150, 100)
    assert np.asarray(preprocessors.run("invert (from white bg & black line)", image, 512)).min() == 255
    assert "put ControlNetHED.pth in" in preprocessors.availability("softedge_hed", Path("/nowhere"))
    assert preprocessors.availability("canny", None) is None
