"""styles.csv: A1111's file format and merge rule, safe saving, and problems reported not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.schema.params import GenerationParams
from engine.schema.styles import Style, StyleFile, merge_prompt, with_styles_applied
from tests.fakes.fake_engine import FakeEngine
from ui.widgets.styles import apply_styles, save_style, style_choices

A1111_FILE = """name,prompt,negative_prompt
Cinematic,"{prompt}, cinematic lighting, 35mm","cartoon, (blurry:1.2)"
Watercolour,"watercolour, soft edges",
"Quoted, name","a ""quoted"" word",ugly
"""


def test_merge_rule_is_a1111s() -> None:
    assert merge_prompt("{prompt}, cinematic", "a cat") == "a cat, cinematic"
    assert merge_prompt("watercolour", "a cat") == "a cat, watercolour"
    assert merge_prompt("watercolour", "") == "watercolour"
    assert merge_prompt("", "a cat ") == "a cat"


def test_reads_an_a1111_styles_file_and_applies_styles_in_order(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    styles = StyleFile.read(path)
    assert styles.problem is None and styles.names == ["Cinematic", "Watercolour", "Quoted, name"]
    assert styles.styles["Quoted, name"] == Style("Quoted, name", 'a "quoted" word', "ugly")
    prompt, negative = styles.apply("a cat", "lowres", ["Cinematic", "Watercolour"])
    assert prompt == "a cat, cinematic lighting, 35mm, watercolour, soft edges"
    assert negative == "lowres, cartoon, (blurry:1.2)"
    with pytest.raises(ValueError, match="unknown style\\(s\\) 'Noir'"):
        styles.apply("a cat", "", ["Noir"])


def test_saving_round_trips_and_never_overwrites_silently(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    saved = StyleFile.read(path).save(Style("Noir", 'black and white, "film", {prompt}', "colour, BREAK"))
    again = StyleFile.read(path)
    assert again.styles == saved.styles and len(again.names) == 4
    assert again.styles["Noir"].prompt == 'black and white, "film", {prompt}'
    assert again.styles["Cinematic"].prompt == "{prompt}, cinematic lighting, 35mm"  # others kept
    with pytest.raises(ValueError, match="already exists"):
        again.save(Style("Noir", "something else"))
    assert StyleFile.read(path).styles["Noir"].negative_prompt == "colour, BREAK"
    replaced = again.save(Style("Noir", "something else"), overwrite=True)
    assert replaced.styles["Noir"].prompt == "something else"
    with pytest.raises(ValueError, match="needs a name"):
        again.save(Style("  "))


def test_missing_and_malformed_files_are_reported_not_fatal(tmp_path: Path) -> None:
    missing = StyleFile.read(tmp_path / "styles.csv")
    assert missing.names == [] and missing.problem is None
    assert missing.save(Style("First", "a")).names == ["First"]  # a missing file is created

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("title,text\nx,y\n", encoding="utf-8")
    read = StyleFile.read(wrong)
    assert read.names == [] and "no 'name' column" in (read.problem or "")
    with pytest.raises(ValueError, match="not saving"):  # would destroy what the user has there
        read.save(Style("New", "p"))
    assert wrong.read_text(encoding="utf-8") == "title,text\nx,y\n"

    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "cannot read" in (StyleFile.read(binary).problem or "")


def test_a_job_with_styles_gets_the_merged_prompts(tmp_path: Path) -> None:
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    params = GenerationParams(prompt="a cat", negative_prompt="lowres", styles=("Cinematic",))
    merged = with_styles_applied(params, StyleFile.read(path))
    assert merged.prompt == "a cat, cinematic lighting, 35mm" and merged.styles == ()
    assert merged.negative_prompt == "lowres, cartoon, (blurry:1.2)"


def test_ui_handlers_apply_save_and_list(tmp_path: Path) -> None:
    engine = FakeEngine(styles_path=tmp_path / "styles.csv")
    assert style_choices(engine) == ([], None)
    assert save_style(engine, " Moody ", "{prompt}, moody", "bright") == ["Moody"]
    assert apply_styles(engine, "a cat", "", ["Moody"]) == ("a cat, moody", "bright")
    with pytest.raises(ValueError, match="already exists"):
        save_style(engine, "Moody", "x", "")
    job = engine.submit_txt2img(
        GenerationParams(prompt="a dog", styles=("Moody",), steps=1, width=64, height=64)
    )
    job.wait()
    assert engine.submitted[-1].prompt == "a dog, moody"
