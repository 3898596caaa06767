"""Infotext: A1111 'parameters' text <-> GenerationParams."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.schema.infotext import (
    build_infotext,
    labelled_fields,
    params_from_infotext,
    parse_infotext,
    read_png_parameters,
)
from engine.schema.params import GenerationParams
from engine.schema.sampler_params import ROWS

# (params, model name) — varied on purpose: awkward prompts, sizes, samplers, batches.
CASES: list[tuple[dict[str, object], str | None]] = [
    ({}, None),
    ({"prompt": "a cat"}, "sd15"),
    ({"prompt": "a cat, sitting, on a mat", "negative_prompt": "blurry, ugly"}, "sd15"),
    ({"prompt": "style: oil painting; mood: calm", "negative_prompt": "text: watermark"}, None),
    ({"prompt": 'a "quoted" word and (emphasis:1.2)', "negative_prompt": 'no "quotes"'}, "m"),
    ({"prompt": "line one\nline two\nline three", "negative_prompt": "neg one\nneg two"}, "m"),
    ({"prompt": "日本の猫, café crème, emoji 🐱", "negative_prompt": "ßchlecht"}, "モデル"),
    ({"prompt": "", "negative_prompt": "only a negative"}, None),
    ({"prompt": "empty negative", "negative_prompt": ""}, None),
    ({"prompt": "x", "steps": 1, "cfg_scale": 0.0}, None),
    ({"prompt": "x", "steps": 150, "cfg_scale": 30.0, "seed": 2**32 - 1}, None),
    ({"prompt": "x", "cfg_scale": 7.5, "width": 768, "height": 512}, None),
    ({"prompt": "x", "cfg_scale": 3.25, "width": 64, "height": 2048}, None),
    ({"prompt": "x", "batch_size": 4}, "sd15"),
    ({"prompt": "x", "batch_size": 16, "sampler_name": "DDIM"}, None),
    ({"prompt": "x", "sampler_name": "DPM++ 2M", "scheduler": "Karras"}, None),
    ({"prompt": "x", "sampler_name": "Euler", "scheduler": "Exponential"}, None),
    ({"prompt": "x", "sampler_name": "Euler a", "scheduler": "Uniform"}, None),
    ({"prompt": "x", "sampler_name": "DDIM", "scheduler": "DDIM"}, None),
    ({"prompt": "x", "checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]"}, None),
    ({"prompt": "x", "checkpoint": "folder/name, with comma: and colon"}, None),
    ({"prompt": "mentions Negative prompt: mid-line", "negative_prompt": "n\nNegative prompt: again"}, None),
    ({"prompt": "trailing comma,", "negative_prompt": "Steps: 5, Sampler: x, Seed: 3"}, None),
    ({"prompt": "a\n\nb", "negative_prompt": "c\n\nd"}, None),
]


@pytest.mark.parametrize(("fields", "model"), CASES)
def test_round_trip(fields: dict[str, object], model: str | None) -> None:
    params = GenerationParams(**{"seed": random.Random(str(fields)).randrange(2**32), **fields})
    seed = params.seed
    text = build_infotext(
        params, seed=seed, model_name=model, model_hash="abcdef1234" if model else None, batch_pos=1
    )
    parsed_params, leftovers = params_from_infotext(text)
    expected = params if model is None else params.model_copy(update={"checkpoint": model})
    assert parsed_params == expected, text
    assert set(leftovers) <= {"Model hash", "Batch pos", "Version"}, leftovers
    if model:
        assert leftovers["Model hash"] == "abcdef1234"


def test_a1111_format_and_order() -> None:
    params = GenerationParams(prompt="a cat", negative_prompt="dog", steps=20, cfg_scale=7.0, batch_size=2)
    text = build_infotext(
        params, seed=1, model_name="name", model_hash="abcdef1234", batch_pos=0, extra={"Clip skip": 2}
    )
    prompt, negative, last = text.split("\n")
    assert (prompt, negative) == ("a cat", "Negative prompt: dog")
    assert last.startswith(
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model hash: abcdef1234, Model: name, Batch size: 2, Batch pos: 0, Clip skip: 2, Version: atelier-"
    )


def test_single_images_omit_batch_and_none_values() -> None:
    text = build_infotext(GenerationParams(prompt="p"), seed=3, model_name=None, model_hash=None)
    assert text.split("\n")[0] == "p"  # no Negative prompt line when it is empty
    for absent in ("Batch size", "Batch pos", "Model", "Negative prompt"):
        assert absent not in text
    assert "Seed: 3" in text  # the resolved seed, not the request's -1


def test_keys_come_from_the_schema() -> None:
    labels = labelled_fields()
    assert labels["Size"] == ("width", "height")
    assert labels["Model"] == ("checkpoint",)
    text = build_infotext(GenerationParams(), seed=1, model_name="m", model_hash=None)
    sampler_keys = {row.infotext for row in ROWS}  # written only when not A1111's default
    hires_keys = {label for label, names in labels.items() if names[0].startswith("hr_")} | {
        "Denoising strength"
    }
    variation_keys = {"Variation seed", "Variation seed strength"}  # written only with a strength above 0
    refiner_keys = {"Refiner", "Refiner switch at"}  # written only when a refiner takes over
    distilled = {"Distilled CFG Scale"}  # by the pipeline, for models that take it (Flux dev)
    optional = sampler_keys | hires_keys | variation_keys | refiner_keys | distilled
    for label in labels:
        if label != "Batch size" and label not in optional:
            assert f"{label}: " in text
    assert not any(f"{key}: " in text for key in optional)
    refined = GenerationParams(refiner_checkpoint="xl-refiner [0123456789]", refiner_switch_at=0.7)
    text = build_infotext(refined, seed=1, model_name="m", model_hash=None)
    assert "Refiner: xl-refiner [0123456789], Refiner switch at: 0.7" in text
    assert params_from_infotext(text)[0].refiner_switch_at == 0.7
    hires = build_infotext(
        GenerationParams(enable_hr=True, hr_second_pass_steps=10, hr_resize_x=640, hr_resize_y=512),
        seed=1,
        model_name="m",
        model_hash=None,
    )
    for part in (
        "Denoising strength: 0.7",
        "Hires upscale: 2",
        "Hires resize: 640x512",
        "Hires steps: 10",
        "Hires upscaler: Latent",
    ):
        assert part in hires
    assert "Hires prompt" not in hires and "Hires sampler" not in hires  # unset: not written
    back, _ = params_from_infotext(hires)
    assert back.enable_hr and (back.hr_resize_x, back.hr_second_pass_steps) == (640, 10)


def test_values_needing_quotes_are_json_quoted() -> None:
    text = build_infotext(
        GenerationParams(),
        seed=1,
        model_name='a, b: "c"',
        model_hash=None,
        extra={"Lora hashes": "x: 1, y: 2", "Plain": "text"},
    )
    assert 'Model: "a, b: \\"c\\""' in text
    assert 'Lora hashes: "x: 1, y: 2"' in text and "Plain: text" in text
    parsed = parse_infotext(text)
    assert parsed["Model"] == 'a, b: "c"' and parsed["Lora hashes"] == "x: 1, y: 2"


def test_legacy_sampler_names_are_split() -> None:
    text = "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x768"
    params, leftovers = params_from_infotext(text)
    assert (params.sampler_name, params.scheduler) == ("DPM++ 2M", "Karras")
    assert (params.width, params.height, params.seed) == (512, 768, 5)
    assert leftovers == {}
    # An explicit schedule type in the text wins over the one in the legacy name.
    params, _ = params_from_infotext(text + ", Schedule type: Exponential")
    assert (params.sampler_name, params.scheduler) == ("DPM++ 2M", "Exponential")


A1111_SAMPLE = (
    "masterpiece, best quality, 1girl, (long hair:1.2), looking at viewer\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3229188236, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    'Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", '
    'TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)


def test_real_a1111_sample_parses() -> None:
    parsed = parse_infotext(A1111_SAMPLE)
    assert parsed["Prompt"].startswith("masterpiece") and parsed["Prompt"].endswith("viewer")
    assert parsed["Negative prompt"] == "lowres, bad anatomy, (worst quality:1.4)"
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert parsed["Version"] == "v1.10.1"
    params, leftovers = params_from_infotext(A1111_SAMPLE)
    assert (params.steps, params.sampler_name, params.scheduler) == (28, "DPM++ 2M", "Karras")
    assert (params.cfg_scale, params.seed, params.width, params.height) == (6.5, 3229188236, 512, 768)
    assert params.checkpoint == "v1-5-pruned-emaonly"
    assert leftovers["Model hash"] == "6ce0161689"
    assert params.enable_hr and params.hr_upscaler == "Latent"  # a Hires key means hires fix was on


def test_bad_values_keep_the_base_and_are_reported() -> None:
    base = GenerationParams(steps=33, width=640, sampler_name="DDIM", cfg_scale=4.0)
    text = "p\nSteps: abc, Sampler: No Such Sampler, Size: 12x, CFG scale: 99, Seed: 7"
    params, leftovers = params_from_infotext(text, base)
    assert (params.steps, params.width, params.sampler_name, params.cfg_scale) == (33, 640, "DDIM", 4.0)
    assert params.seed == 7 and params.prompt == "p"
    assert leftovers == {"Steps": "abc", "Sampler": "No Such Sampler", "Size": "12x", "CFG scale": "99"}


def test_last_line_with_few_pairs_is_prompt() -> None:
    parsed = parse_infotext("just a prompt\nwith: one colon")
    assert parsed["Prompt"] == "just a prompt\nwith: one colon"
    assert set(parsed) == {"Prompt", "Negative prompt"}


MALFORMED = [
    "",
    "\n\n\n",
    "Negative prompt:",
    "Steps: , Sampler: , CFG scale: ",
    'Steps: "unterminated, Sampler: "x, Seed: "',
    'a\nSteps: "\\u12", Seed: "\\x", Size: "a"',
    "Size: 512x512x512, Steps: 2, Seed: 1",
    "Size: x, Steps: -5, Seed: -9",
    "Seed: 99999999999999999999999, Steps: 1e400, CFG scale: nan",
    "\x00\x01\x02: \x03, a: b, c: d",
    "Model: , Batch size: 0, Steps: 0",
    "x" * 30000 + "\nSteps: 20, Seed: 1, Size: 64x64",
    "\r\nNegative prompt: n\r\nSteps: 20, Seed: 1, Size: 64x64\r\n",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_text_never_raises(text: str) -> None:
    assert isinstance(parse_infotext(text), dict)
    params, leftovers = params_from_infotext(text)
    assert isinstance(params, GenerationParams) and isinstance(leftovers, dict)


def test_fuzz_never_raises() -> None:
    rng = random.Random(0)
    alphabet = 'ab ,:"\\\nxSteps0123456789-Negative prompt:Size'
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(80)))
        params_from_infotext(text)


def _image_bytes(fmt: str, **save_kwargs: object) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, fmt, **save_kwargs)
    buffer.seek(0)
    return buffer


def test_read_png_parameters(tmp_path) -> None:
    text = build_infotext(GenerationParams(prompt="ünïcode, cat"), seed=1, model_name=None, model_hash=None)
    info = PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "a.png"
    path.write_bytes(_image_bytes("PNG", pnginfo=info).getvalue())
    assert read_png_parameters(path) == text
    assert read_png_parameters(str(path)) == text
    with Image.open(path) as image:
        assert read_png_parameters(image) == text
    plain = tmp_path / "plain.png"
    plain.write_bytes(_image_bytes("PNG").getvalue())
    assert read_png_parameters(plain) is None
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert read_png_parameters(junk) is None
    assert read_png_parameters(tmp_path / "missing.png") is None


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_read_exif_user_comment(fmt: str) -> None:
    text = "a cat, ünï\nSteps: 20, Sampler: Euler a, Seed: 1"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")  # as piexif writes it
    with Image.open(_image_bytes(fmt, exif=exif)) as image:
        assert read_png_parameters(image) == text
