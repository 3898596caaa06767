"""ControlNet on SDXL, on tiny seeded components: SDXL ControlNets load from the A1111 single-file
layout (with its `label_emb` add embedding), diffusers-layout files and folders alike and are listed
as SDXL; they steer txt2img with the UNet's pooled text and size ids; an inert unit changes nothing;
smaller ControlNets and 9-channel checkpoints are built from the weights; and a ControlNet of another
family is a clear error naming both families before anything is sampled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.models.ldm_convert import controlnet_to_ldm
from engine.pipeline import img2img as i2i
from engine.pipeline.txt2img import txt2img
from engine.schema.params import GenerationParams, Img2ImgParams
from tests.fakes.tiny_models import load_tiny

SIZE = 64


def tiny_controlnet(unet, seed: int, **config):
    """A ControlNet for `unet` (its config changed by `config`) with non-zero zero convolutions and
    its own add embedding, so a weight that loads into the wrong place shows in the picture."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    if config:
        cn = ControlNetModel.from_config({**ControlNetModel.from_unet(unet).config, **config})
    else:
        cn = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for block in [*cn.controlnet_down_blocks, cn.controlnet_mid_block]:
            block.weight.normal_(0, 0.5)
        if hasattr(cn, "add_embedding"):
            for p in cn.add_embedding.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return cn.eval()


def tensors(cn) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in cn.state_dict().items()}


@pytest.fixture(scope="module")
def xl(sdxl_files):
    return load_tiny(sdxl_files["base"])


@pytest.fixture(scope="module")
def sd1(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


@pytest.fixture(scope="module")
def library(xl, sd1, tmp_path_factory):
    """One folder with the SDXL ControlNet in all three layouts, a smaller SDXL one (one transformer
    layer where the UNet has two, as in diffusers' mid/small SDXL ControlNets) and an SD 1.x one."""
    folder = tmp_path_factory.mktemp("ControlNet")
    cn = tiny_controlnet(xl.unet, 1)
    cn.save_pretrained(folder / "xl-folder")
    save_file(controlnet_to_ldm(tensors(cn), dict(cn.config)), folder / "xl-a1111.safetensors")
    save_file(tensors(cn), folder / "xl-diffusers.safetensors")
    small = tiny_controlnet(xl.unet, 2, transformer_layers_per_block=(1, 1))
    save_file(controlnet_to_ldm(tensors(small), dict(small.config)), folder / "xl-small.safetensors")
    tiny_controlnet(sd1.unet, 3).save_pretrained(folder / "sd-folder")
    return ControlNetLibrary(folder)


def control_picture() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(image).rectangle((12, 12, 40, 40), outline="white", width=3)
    return image


def unit(model="xl-folder", **kw) -> ControlNetUnit:
    return ControlNetUnit(module="none", model=model, **kw)


def run(model, library, units, **kw):
    base = dict(prompt="a red square", steps=4, sampler_name="Euler", seed=5, width=SIZE, height=SIZE)
    control = [ControlInput(u, control_picture()) for u in units]
    return txt2img(model, GenerationParams(**{**base, **kw}), control=control, controlnets=library)


def px(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


@pytest.fixture(scope="module")
def plain(xl, library):
    return px(run(xl, library, []))


def test_every_layout_loads_and_is_listed_as_sdxl(xl, library):
    assert dict(library.listing()) == {
        **dict.fromkeys(("xl-a1111", "xl-diffusers", "xl-folder", "xl-small"), "SDXL"),
        "sd-folder": "context 32",  # an SD 1.x/2.x layout at a width no real model has
    }
    pictures = {
        name: px(run(xl, library, [unit(name)])) for name in ("xl-folder", "xl-a1111", "xl-diffusers")
    }
    assert np.array_equal(pictures["xl-a1111"], pictures["xl-folder"])
    assert np.array_equal(pictures["xl-diffusers"], pictures["xl-folder"])


def test_an_unreadable_file_is_listed_as_unknown(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    assert ControlNetLibrary(tmp_path).listing() == [("broken", "unknown")]


def test_an_sdxl_controlnet_changes_the_picture_with_the_unets_added_inputs(xl, library, plain):
    seen = []
    cn, _ = library.load("xl-folder", xl.unet, xl.device, xl.dtype)
    hook = cn.register_forward_pre_hook(
        lambda m, args, kw: seen.append(kw["added_cond_kwargs"]), with_kwargs=True
    )
    try:
        result = run(xl, library, [unit(weight=0.8)])
    finally:
        hook.remove()
    assert np.abs(px(result) - plain).mean() > 1
    assert 'ControlNet 0: "Module: none, Model: xl-folder [' in result.infotexts[0]
    ids = seen[0]["time_ids"]  # the picture's size, crop 0,0, as the UNet gets them
    assert ids.shape[0] == 2 and ids[0].tolist() == [SIZE, SIZE, 0, 0, SIZE, SIZE]
    assert seen[0]["text_embeds"].shape == (2, xl.text_encoder_2.config.projection_dim)


def test_a_smaller_sdxl_controlnet_is_built_from_its_weights(xl, library, plain):
    assert np.abs(px(run(xl, library, [unit("xl-small")])) - plain).mean() > 1


@pytest.mark.parametrize("inert", [dict(weight=0.0), dict(enabled=False)])
def test_an_inert_sdxl_unit_is_bit_identical_to_none(xl, library, plain, inert):
    result = run(xl, library, [unit(**inert)])
    assert np.array_equal(px(result), plain)
    assert "ControlNet" not in result.infotexts[0]


def test_a_9_channel_checkpoint_takes_a_4_channel_single_file(sdxl_files, library):
    """An inpainting UNet's extra input channels are not the ControlNet's: it sees the latents."""
    model = load_tiny(sdxl_files["inpainting"])
    picture = control_picture()
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    p = Img2ImgParams(prompt="x", steps=4, sampler_name="Euler", seed=5, width=SIZE, height=SIZE, mask_blur=0)
    inputs = i2i.Img2ImgInputs([picture], mask)
    without = i2i.img2img(model, p, inputs)
    with_cn = i2i.img2img(
        model, p, inputs, control=[ControlInput(unit("xl-a1111"), None)], controlnets=library
    )
    assert np.abs(px(with_cn) - px(without)).mean() > 0.5


@pytest.mark.parametrize(
    ("checkpoint", "controlnet", "message"),
    [
        (
            "xl",
            "sd-folder",
            r"sd-folder is an SD 1\.x/2\.x \(context 32\) ControlNet; the loaded checkpoint is SDXL$",
        ),
        ("sd1", "xl-folder", r"xl-folder is an SDXL ControlNet; the loaded checkpoint is SD 1\.x$"),
        ("sd1", "xl-a1111", r"xl-a1111.safetensors is an SDXL ControlNet; the loaded checkpoint is SD 1\.x$"),
        ("refiner", "xl-diffusers", r"is an SDXL ControlNet; the loaded checkpoint is SDXL refiner$"),
        (
            "refiner",
            "sd-folder",
            r"is an SD 1\.x/2\.x \(context 32\) ControlNet; the loaded checkpoint is SDXL refiner",
        ),
    ],
)
def test_a_controlnet_of_another_family_is_refused_before_sampling(
    request, sdxl_files, library, checkpoint, controlnet, message
):
    model = (
        load_tiny(sdxl_files["refiner"]) if checkpoint == "refiner" else request.getfixturevalue(checkpoint)
    )
    calls = []
    hook = model.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            run(model, library, [unit(controlnet)])
    finally:
        hook.remove()
    assert calls == []  # refused while the units were prepared: nothing was sampled


def test_a_cached_controlnet_is_checked_again_for_another_checkpoint(xl, sd1, library):
    run(sd1, library, [unit("sd-folder")])  # loaded and cached for SD 1.x
    with pytest.raises(ValueError, match="the loaded checkpoint is SDXL"):
        run(xl, library, [unit("sd-folder")])
