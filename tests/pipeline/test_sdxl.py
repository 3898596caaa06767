"""SDXL through Atelier's own stages, on tiny random SDXL components: txt2img, img2img and the
refiner against diffusers' SDXL pipelines on the same components and noise, prompt syntax on
both text encoders, and inpainting with and without a 9-channel model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.reference import diffusers_sdxl_img2img_pipeline, diffusers_sdxl_pipeline
from engine.pipeline import img2img as i2i
from engine.pipeline import stages
from engine.pipeline.latents import encode, to_tensor
from engine.pipeline.txt2img import txt2img
from engine.schema.infotext import params_from_infotext
from engine.schema.params import Img2ImgParams
from tests.fakes.tiny_models import CLIP_L_WIDTH, load_tiny, tiny_params

SIZE = 64


@pytest.fixture(scope="module")
def base(sdxl_files):
    return load_tiny(sdxl_files["base"])


@pytest.fixture(scope="module")
def refiner(sdxl_files):
    return load_tiny(sdxl_files["refiner"])


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def euler(**kw):
    return tiny_params(sampler_name="Euler", scheduler="Uniform", **kw)


def noise_of(seed: int) -> torch.Tensor:
    """Our first noise draw for `seed` (a CPU generator per image), for diffusers' `latents=`."""
    return torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("negative", ["blurry", ""])  # "": all-zero uncond, as diffusers and A1111
def test_txt2img_matches_diffusers_sdxl_pipeline(base, negative):
    p = euler(steps=4, negative_prompt=negative)
    with torch.inference_mode():
        theirs = diffusers_sdxl_pipeline(base)(
            p.prompt,
            negative_prompt=negative or None,  # None: diffusers' zeros for an empty negative prompt
            num_inference_steps=p.steps,
            guidance_scale=p.cfg_scale,
            height=SIZE,
            width=SIZE,
            latents=noise_of(p.seed),
        ).images[0]
    ours = txt2img(base, p).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 2
    assert pixels(ours).std() > 5  # a picture, not a flat field


def test_the_diffusers_folder_gives_the_same_picture(base, sdxl_files):
    folder = load_tiny(sdxl_files["folder"])
    assert folder.family == "sdxl"
    assert np.array_equal(
        pixels(txt2img(folder, euler()).images[0]), pixels(txt2img(base, euler()).images[0])
    )


@pytest.mark.parametrize("which", ["base", "refiner"])
def test_img2img_matches_diffusers_sdxl_img2img(base, refiner, which):
    """With A1111's "fix steps" img2img runs exactly the last `steps` of a steps/strength schedule,
    as diffusers' strength does; both start from the same latents of the same picture. The refiner
    alone too (its aesthetic-score ids, OpenCLIP-G only), as people run it on finished pictures."""
    model = refiner if which == "refiner" else base
    src = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    p = Img2ImgParams(**{**euler(steps=5).model_dump(), "denoising_strength": 0.5, "img2img_fix_steps": True})
    latents = encode(model, to_tensor([src], model.device))
    with torch.inference_mode():
        theirs = diffusers_sdxl_img2img_pipeline(model)(
            p.prompt,
            negative_prompt=p.negative_prompt,
            image=latents,  # 4 channels: taken as latents (the posterior's mean, as we encode)
            strength=0.5,
            num_inference_steps=10,
            guidance_scale=p.cfg_scale,
            generator=torch.Generator().manual_seed(p.seed),
        ).images[0]
    ours = i2i.img2img(model, p, i2i.Img2ImgInputs([src])).images[0]
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 2


def test_base_and_refiner_match_diffusers_denoising_end_and_start(base, refiner):
    p = euler(steps=10, refiner_checkpoint="xl-refiner", refiner_switch_at=0.8)
    with torch.inference_mode():
        latents = diffusers_sdxl_pipeline(base)(
            p.prompt,
            negative_prompt=p.negative_prompt,
            num_inference_steps=p.steps,
            guidance_scale=p.cfg_scale,
            height=SIZE,
            width=SIZE,
            latents=noise_of(p.seed),
            denoising_end=0.8,
            output_type="latent",
        ).images
        theirs = diffusers_sdxl_img2img_pipeline(refiner)(
            p.prompt,
            negative_prompt=p.negative_prompt,
            image=latents,
            num_inference_steps=p.steps,
            guidance_scale=p.cfg_scale,
            denoising_start=0.8,
        ).images[0]
    result = txt2img(base, p, refiner=refiner)
    assert np.abs(pixels(result.images[0]) - pixels(theirs)).max() <= 2
    assert not np.array_equal(pixels(result.images[0]), pixels(txt2img(base, euler(steps=10)).images[0]))
    info = result.infotexts[0]
    assert f"Refiner: xl-refiner [{refiner.short_hash}]" in info and "Refiner switch at: 0.8" in info
    read, _ = params_from_infotext(info)  # PNG Info gives both back
    assert read.refiner_checkpoint == f"xl-refiner [{refiner.short_hash}]" and read.refiner_switch_at == 0.8


def test_refiner_switch_at_one_is_the_base_alone(base, refiner):
    alone = txt2img(base, euler(steps=6))
    with_refiner = txt2img(
        base, euler(steps=6, refiner_checkpoint="xl-refiner", refiner_switch_at=1.0), refiner=refiner
    )
    assert np.array_equal(pixels(alone.images[0]), pixels(with_refiner.images[0]))
    assert "Refiner" not in with_refiner.infotexts[0]


def test_refiner_continues_a_multistep_sampler_and_hires_fix(base, refiner):
    """DPM++ 2M keeps its history across the switch; hires fix then runs on the refiner."""
    p = tiny_params(
        sampler_name="DPM++ 2M", steps=6, refiner_checkpoint="xl-refiner", refiner_switch_at=0.5,
        enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5,
    )  # fmt: skip
    job_result = txt2img(base, p, refiner=refiner)
    assert job_result.images[0].size == (96, 96)
    assert pixels(job_result.images[0]).std() > 5


def test_an_sd1_refiner_on_sdxl_is_a_clear_error(base, tiny_single_file):
    sd1 = load_tiny(tiny_single_file)
    with pytest.raises(ValueError, match="does not share the latent space"):
        txt2img(base, euler(refiner_checkpoint="tiny"), refiner=sd1)


def _both_halves(model, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's embedding split into its CLIP-L and OpenCLIP-G parts."""
    cond = stages.encode_prompt(model, euler(**kw)).at(0)[0][0].hidden
    return cond[..., :CLIP_L_WIDTH], cond[..., CLIP_L_WIDTH:]


@pytest.mark.parametrize(
    "changed",
    [
        {"prompt": "a (red:1.5) circle"},  # emphasis
        {"prompt": "a red BREAK circle"},  # BREAK starts a chunk
        {"prompt": "a [red:blue:0] circle"},  # prompt editing (from step 0: blue)
        {"prompt": "a red circle", "CLIP_stop_at_last_layers": 3},  # CLIP skip below SDXL's own layer
    ],
)
def test_prompt_syntax_changes_both_encoders(base, changed):
    plain_l, plain_g = _both_halves(base, prompt="a red circle")
    other_l, other_g = _both_halves(base, **changed)
    if other_l.shape == plain_l.shape:
        assert not torch.equal(other_l, plain_l) and not torch.equal(other_g, plain_g)
    else:  # BREAK: two chunks, each through both encoders
        assert other_l.shape[1] == other_g.shape[1] == 2 * plain_l.shape[1]


def test_clip_skip_two_is_sdxl_s_own_layer(base):
    assert all(
        torch.equal(a, b)
        for a, b in zip(_both_halves(base), _both_halves(base, CLIP_stop_at_last_layers=2), strict=True)
    )


def test_the_pooled_embedding_is_the_g_encoder_s_projection(base):
    cond = stages.encode_prompt(base, euler(prompt="a red circle")).at(0)[0][0]
    ids = base.tokenizer_2("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = base.text_encoder_2(ids).text_embeds
    assert torch.allclose(cond.pooled, expected, atol=1e-6)


def _box_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


@pytest.mark.parametrize("which", ["base", "inpainting"])
@pytest.mark.parametrize("content", [1, 2])  # original, latent noise
def test_inpainting_keeps_every_unmasked_pixel(sdxl_files, base, which, content):
    model = base if which == "base" else load_tiny(sdxl_files["inpainting"])
    assert model.is_inpainting == (which == "inpainting")
    src = Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    p = Img2ImgParams(**euler(steps=6).model_dump(), inpainting_fill=content, mask_blur=0)
    out = i2i.img2img(model, p, i2i.Img2ImgInputs([src], _box_mask())).images[0]
    keep = np.asarray(_box_mask()) == 0
    assert np.array_equal(pixels(out)[keep], pixels(src)[keep])
    assert np.abs(pixels(out) - pixels(src))[~keep].mean() > 5


def test_an_sdxl_embedding_fills_both_encoders(base, tmp_path):
    """A file with `clip_l` and `clip_g` vectors: each encoder gets its own. Vectors equal to the
    token embeddings of "red" in each encoder give exactly the encoding of the word itself."""
    from safetensors.torch import save_file

    from engine.conditioning.embeddings import EmbeddingDatabase

    red = base.tokenizer("red", add_special_tokens=False)["input_ids"]
    vectors = {
        name: encoder.get_input_embeddings().weight[red].detach().clone()
        for name, encoder in (("clip_l", base.text_encoder), ("clip_g", base.text_encoder_2))
    }
    save_file(vectors, str(tmp_path / "my-red.safetensors"))
    save_file({"emb_params": torch.zeros(1, 7)}, str(tmp_path / "other-width.safetensors"))
    db = EmbeddingDatabase.load(
        tmp_path, (base.text_encoder.config.hidden_size, base.text_encoder_2.config.hidden_size)
    )
    assert list(db.embeddings) == ["my-red"] and "other-width" in db.skipped
    with_embedding = stages.encode_prompt(base, euler(prompt="a my-red circle"), db).at(0)[0][0]
    plain = stages.encode_prompt(base, euler(prompt="a red circle"), db).at(0)[0][0]
    assert torch.allclose(with_embedding.hidden, plain.hidden, atol=1e-6)
    assert torch.allclose(with_embedding.pooled, plain.pooled, atol=1e-6)


def test_under_medvram_the_refiner_takes_its_turns_with_the_base(base, refiner, monkeypatch):
    """The job's memory plan covers the refiner: under medvram its parts are groups of their own,
    and each comes to the device when it runs (here from RAM to RAM, the same code path): the
    prompts for both, the base's UNet, the refiner's at the switch, the refiner's VAE for the
    decode, and the base's UNet again for the next batch. The pictures do not change."""
    import dataclasses

    from engine.models.memory_plan import GPU_ONLY, MEDVRAM, job_parts
    from engine.models.residency import Residency
    from engine.service.jobs import Job

    p = euler(steps=6, n_iter=2, refiner_checkpoint="xl-refiner", refiner_switch_at=0.5)
    together = txt2img(base, p, refiner=refiner)
    residency = Residency(torch.device("cpu"))
    planned = dataclasses.replace(base, residency=residency)
    residency.apply(MEDVRAM, job_parts(planned, refiner))
    turns: list[str] = []
    real_use = residency.use
    monkeypatch.setattr(residency, "use", lambda name: turns.append(name) or real_use(name))
    job = Job()
    try:
        taking_turns = txt2img(planned, p, refiner=refiner, job=job)
    finally:
        residency.apply(GPU_ONLY, planned.part_groups())  # hooks off the shared test models
    changes = [name for i, name in enumerate(turns) if i == 0 or turns[i - 1] != name]
    batch = ["unet", "refiner unet", "refiner vae"]
    assert changes == ["text", "refiner text", *batch, *batch]
    assert "Refiner xl-refiner switched to" in job.progress.textinfo  # RAM is this device
    for a, b in zip(together.images, taking_turns.images, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_a_refiner_off_the_device_is_said_to_swap_in(base, refiner, monkeypatch):
    from engine.pipeline import refiner as refiner_module
    from engine.service.jobs import Job

    monkeypatch.setattr(refiner_module, "is_on", lambda module, device: module is not refiner.unet)
    job = Job()
    txt2img(
        base, euler(steps=4, refiner_checkpoint="xl-refiner", refiner_switch_at=0.5), refiner=refiner, job=job
    )
    assert "Refiner xl-refiner swapped in" in job.progress.textinfo


def test_the_refiner_sees_the_job_s_aesthetic_scores(refiner):
    from engine.service.jobs import Job

    src = Image.fromarray(np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    p = Img2ImgParams(**{**euler(steps=4).model_dump(), "denoising_strength": 0.6})
    default = i2i.img2img(refiner, p, i2i.Img2ImgInputs([src]), job=Job()).images[0]
    job = Job()
    job.aesthetic_scores = (9.0, 1.0)
    other = i2i.img2img(refiner, p, i2i.Img2ImgInputs([src]), job=job).images[0]
    assert not np.array_equal(pixels(default), pixels(other))
