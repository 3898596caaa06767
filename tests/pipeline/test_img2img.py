"""The img2img / inpainting pipeline on tiny seeded components: A1111's step semantics, exact
kept pixels, every masked-content mode, only-masked inpainting, 9-channel inpainting models,
infotext keys, and the clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.pipeline import img2img as i2i
from engine.schema.infotext import params_from_infotext, parse_infotext
from engine.schema.params import Img2ImgParams
from engine.service.jobs import Job
from tests.fakes.tiny_models import load_tiny

SIZE = 64


@pytest.fixture(scope="module")
def model(tiny_diffusers_dir):
    return load_tiny(tiny_diffusers_dir)


@pytest.fixture(scope="module")
def inpainting_model(tmp_path_factory):
    from tests.fakes.tiny_models import tiny_components, write_single_file

    parts = tiny_components(seed=3, in_channels=9)
    path = write_single_file(parts, tmp_path_factory.mktemp("inpaint") / "tiny-inpainting.safetensors")
    return load_tiny(path)


def params(**kw) -> Img2ImgParams:
    base = dict(prompt="a red circle", steps=10, sampler_name="Euler", seed=7, width=SIZE, height=SIZE)
    return Img2ImgParams(**{**base, **kw})


def picture(size=(SIZE, SIZE), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array)


def box_mask(size=(SIZE, SIZE), box=(16, 16, 48, 48)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def run(model, p, inputs, job=None):
    return i2i.img2img(model, p, inputs, job=job)


def test_strength_zero_returns_the_input(model):
    src = picture()
    result = run(model, params(denoising_strength=0.0), i2i.Img2ImgInputs([src]))
    assert np.array_equal(px(result.images[0]), px(src))
    assert "Denoising strength: 0" in result.infotexts[0]


@pytest.mark.parametrize(
    ("strength", "fix", "expected"),
    [(0.5, False, 6), (1.0, False, 10), (0.25, False, 3), (0.5, True, 10), (0.3, True, 10)],
)
def test_steps_follow_a1111(model, strength, fix, expected):
    # A1111: int(strength·steps) + 1 steps are run; with "img2img_fix_steps" exactly `steps`.
    job = Job("img2img")
    run(
        model, params(denoising_strength=strength, img2img_fix_steps=fix), i2i.Img2ImgInputs([picture()]), job
    )
    assert job.progress.job_steps == expected
    assert job.progress.job_step == expected


def test_low_strength_stays_closer_to_the_input_than_high(model):
    src = picture()
    low = run(model, params(denoising_strength=0.2), i2i.Img2ImgInputs([src])).images[0]
    high = run(model, params(denoising_strength=0.9), i2i.Img2ImgInputs([src])).images[0]
    assert np.abs(px(low) - px(src)).mean() < np.abs(px(high) - px(src)).mean()


def test_same_inputs_reproduce(model):
    inputs = i2i.Img2ImgInputs([picture()], box_mask())
    a = run(model, params(), inputs).images[0]
    b = run(model, params(), inputs).images[0]
    assert np.array_equal(px(a), px(b))


@pytest.mark.parametrize("content", [0, 1, 2, 3])
def test_inpainting_keeps_every_unmasked_pixel(model, content):
    src, mask = picture(), box_mask()
    out = run(model, params(inpainting_fill=content, mask_blur=0), i2i.Img2ImgInputs([src], mask)).images[0]
    keep = np.asarray(mask) == 0
    assert np.array_equal(px(out)[keep], px(src)[keep])
    assert np.abs(px(out) - px(src))[~keep].mean() > 5  # and the masked area did change


def test_blurred_edge_is_blended_and_far_pixels_kept(model):
    src, mask = picture(), box_mask()
    out = px(run(model, params(mask_blur=4), i2i.Img2ImgInputs([src], mask)).images[0])
    far = np.ones((SIZE, SIZE), bool)
    far[16 - 12 : 48 + 12, 16 - 12 : 48 + 12] = False  # beyond 3σ of the blur
    assert np.array_equal(out[far], px(src)[far])
    ring = np.zeros((SIZE, SIZE), bool)
    ring[14:50, 14:50] = True
    ring[16:48, 16:48] = False
    assert np.abs(out - px(src))[ring].mean() > 0  # the seam is blended, not a hard cut


def test_masked_content_modes_differ(model):
    src, mask = picture(), box_mask()
    inputs = i2i.Img2ImgInputs([src], mask)
    outs = [
        px(run(model, params(inpainting_fill=c, denoising_strength=0.6), inputs).images[0]) for c in range(4)
    ]
    inside = np.asarray(mask) > 0
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(outs[a] - outs[b])[inside].mean() > 0.5, (a, b)


def test_inpaint_not_masked_repaints_the_outside(model):
    src, mask = picture(), box_mask()
    out = px(
        run(model, params(inpainting_mask_invert=1, mask_blur=0), i2i.Img2ImgInputs([src], mask)).images[0]
    )
    inside = np.asarray(mask) > 0
    assert np.array_equal(out[inside], px(src)[inside])
    assert np.abs(out - px(src))[~inside].mean() > 5


def test_only_masked_returns_the_original_size_and_keeps_the_rest(model):
    src = picture((128, 96))
    mask = box_mask((128, 96), (80, 20, 100, 40))
    p = params(inpaint_full_res=1, inpaint_full_res_padding=8, mask_blur=0)
    result = run(model, p, i2i.Img2ImgInputs([src], mask))
    out = px(result.images[0])
    assert out.shape == (96, 128, 3)
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], px(src)[keep])
    assert np.abs(out - px(src))[~keep].mean() > 5
    info = parse_infotext(result.infotexts[0])
    assert info["Inpaint area"] == "Only masked" and info["Masked area padding"] == "8"


def test_only_masked_padding_changes_the_result(model):
    src = picture((128, 96))
    mask = box_mask((128, 96), (80, 20, 100, 40))
    a = run(model, params(inpaint_full_res=1, inpaint_full_res_padding=4), i2i.Img2ImgInputs([src], mask))
    b = run(model, params(inpaint_full_res=1, inpaint_full_res_padding=40), i2i.Img2ImgInputs([src], mask))
    assert np.abs(px(a.images[0]) - px(b.images[0])).mean() > 0.1


def test_infotext_keys_and_round_trip(model):
    p = params(inpainting_fill=2, mask_blur=6, inpainting_mask_invert=1, initial_noise_multiplier=0.9)
    text = run(model, p, i2i.Img2ImgInputs([picture()], box_mask())).infotexts[0]
    info = parse_infotext(text)
    assert info["Denoising strength"] == "0.75"
    assert info["Mask blur"] == "6"
    assert info["Masked content"] == "latent noise"
    assert info["Mask mode"] == "Inpaint not masked"
    assert info["Noise multiplier"] == "0.9"
    assert "Inpaint area" not in info and "Masked area padding" not in info  # whole picture: A1111 omits
    back, leftovers = params_from_infotext(text, Img2ImgParams())
    assert (back.inpainting_fill, back.mask_blur, back.inpainting_mask_invert) == (2, 6, 1)
    assert back.denoising_strength == 0.75 and back.initial_noise_multiplier == 0.9
    assert "Masked content" not in leftovers


def test_plain_img2img_writes_no_mask_keys(model):
    info = parse_infotext(run(model, params(), i2i.Img2ImgInputs([picture()])).infotexts[0])
    assert "Mask blur" not in info and "Masked content" not in info and "Noise multiplier" not in info


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_resize_modes_give_the_requested_size(model, mode):
    src = picture((100, 60))
    out = run(model, params(resize_mode=mode, width=64, height=96), i2i.Img2ImgInputs([src])).images[0]
    assert out.size == (64, 96)


def test_batch_uses_one_picture_for_every_image(model):
    result = run(model, params(batch_size=2, n_iter=2), i2i.Img2ImgInputs([picture()]))
    assert len(result.images) == 4 and result.seeds == [7, 8, 9, 10]
    assert np.abs(px(result.images[0]) - px(result.images[1])).mean() > 1


def test_a_mask_of_another_size_is_resized_with_a_note(model):
    result = run(model, params(), i2i.Img2ImgInputs([picture()], box_mask((32, 32), (8, 8, 24, 24))))
    assert any("resized" in note for note in result.notes)
    assert result.images[0].size == (SIZE, SIZE)


def test_an_empty_mask_is_refused(model):
    with pytest.raises(ValueError, match="mask"):
        run(model, params(), i2i.Img2ImgInputs([picture()], Image.new("L", (SIZE, SIZE), 0)))


def test_a_huge_picture_is_refused(model, monkeypatch):
    monkeypatch.setattr(i2i, "MAX_INPUT_PIXELS", 64 * 64)
    with pytest.raises(ValueError, match="limit"):
        run(model, params(), i2i.Img2ImgInputs([picture((80, 80))]))


def test_no_picture_is_refused(model):
    with pytest.raises(ValueError, match="input picture"):
        run(model, params(), i2i.Img2ImgInputs([]))


def test_inpainting_model_is_detected_and_runs(inpainting_model):
    assert inpainting_model.is_inpainting
    src, mask = picture(), box_mask()
    out = px(run(inpainting_model, params(mask_blur=0), i2i.Img2ImgInputs([src], mask)).images[0])
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], px(src)[keep])
    assert np.abs(out - px(src))[~keep].mean() > 5
    plain = run(inpainting_model, params(), i2i.Img2ImgInputs([src])).images[0]  # img2img on it too
    assert plain.size == (SIZE, SIZE)


def test_inpainting_model_feeds_the_mask_to_the_unet(inpainting_model):
    seen = []
    unet = inpainting_model.unet
    handle = unet.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        run(inpainting_model, params(steps=2, mask_blur=0), i2i.Img2ImgInputs([picture()], box_mask()))
    finally:
        handle.remove()
    x = seen[0]
    assert x.shape[1] == 9
    mask_channel = x[0, 4]
    assert mask_channel[2:6, 2:6].min() == 1 and mask_channel[0, 0] == 0  # the box, in latent cells


def test_txt2img_runs_on_an_inpainting_model(inpainting_model):
    from engine.pipeline.txt2img import txt2img
    from engine.schema.params import GenerationParams

    result = txt2img(inpainting_model, GenerationParams(prompt="x", steps=2, width=SIZE, height=SIZE, seed=1))
    assert result.images[0].size == (SIZE, SIZE)


def test_outpainting_extends_keeps_and_fills(model):
    from extensions.outpainting.canvas import outpaint_job

    src = picture((64, 48))
    p, inputs = outpaint_job(params(mask_blur=0, inpainting_fill=0, denoising_strength=0.9), src, 16)
    assert (p.width, p.height) == (96, 80)
    out = px(run(model, p, inputs).images[0])
    assert out.shape == (80, 96, 3)
    assert np.array_equal(out[16:64, 16:80], px(src))  # the original, exactly, where it was
    border = np.ones((80, 96), bool)
    border[16:64, 16:80] = False
    assert out[border].std() > 1  # the new area is painted, not a flat pad


def test_outpainting_rounds_to_multiples_of_8_and_blends_the_seam(model):
    from extensions.outpainting.canvas import outpaint_job

    src = picture((64, 64))
    p, inputs = outpaint_job(params(mask_blur=4), src, 13, ["left"])
    assert (p.width, p.height) == (80, 64)  # 64 + 13 rounded up; the extra on the left
    out = px(run(model, p, inputs).images[0])
    offset = 16
    assert np.array_equal(out[:, offset + 4 + 12 :], px(src)[:, 4 + 12 :])  # beyond the blurred seam
    with pytest.raises(ValueError, match="direction"):
        outpaint_job(params(), src, 8, ["sideways"])


def test_batch_processes_every_picture_and_skips_bad_files(model, tmp_path):
    from engine.pipeline.img2img_batch import run_batch
    from engine.schema.infotext import read_png_parameters

    src, out, masks = tmp_path / "in", tmp_path / "out", tmp_path / "masks"
    for d in (src, out, masks):
        d.mkdir()
    picture(seed=1).save(src / "one.png")
    picture(seed=2).convert("RGB").save(src / "two.jpg")
    (src / "notes.txt").write_text("not a picture")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    box_mask().save(masks / "one.png")
    (out / "two.png").write_bytes(b"already here")  # must survive

    def run_one(p, inputs):
        return run(model, p, inputs)

    report = run_batch(run_one, params(steps=2), src, out, mask_dir=masks)
    names = sorted(path.name for path in report.written)
    assert names == ["one.png", "two-1.png"]
    assert (out / "two.png").read_bytes() == b"already here"
    assert sorted(name for name, _ in report.skipped) == ["broken.png", "notes.txt"]
    assert any("two.jpg: no mask" in note for note in report.notes)
    assert "Mask blur" in read_png_parameters(out / "one.png")  # inpainted with its mask
    assert "Mask blur" not in read_png_parameters(out / "two-1.png")


def test_batch_takes_prompts_from_png_info(model, tmp_path):
    from engine.pipeline.img2img_batch import run_batch
    from engine.schema.infotext import read_png_parameters

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a blue star\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 99, Size: 64x64")
    picture().save(src / "a.png", pnginfo=info)
    report = run_batch(lambda p, i: run(model, p, i), params(), src, out, use_png_info=True)
    text = read_png_parameters(report.written[0])
    assert text.startswith("a blue star") and "Seed: 99" in text and "Steps: 3" in text


def test_batch_refuses_missing_folders(model, tmp_path):
    from engine.pipeline.img2img_batch import run_batch

    with pytest.raises(ValueError, match="input folder"):
        run_batch(lambda p, i: None, params(), tmp_path / "nope", tmp_path / "out")
