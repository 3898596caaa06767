"""The Extra networks panel's data: cards with previews, and A1111's click-to-toggle tags."""

from __future__ import annotations

from pathlib import Path

from engine.models.extra_networks import list_cards, toggle_tag
from ui.widgets.extra_networks import gallery_items


def test_cards_list_loras_and_embeddings_with_previews(tmp_path: Path) -> None:
    (tmp_path / "Lora" / "sub").mkdir(parents=True)
    (tmp_path / "Lora" / "sub" / "ink.safetensors").write_bytes(b"x")
    (tmp_path / "Lora" / "sub" / "ink.preview.png").write_bytes(b"png")
    (tmp_path / "Lora" / "notes.txt").write_text("not a network")
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "bad-hands.pt").write_bytes(b"x")
    cards = list_cards(tmp_path / "Lora", tmp_path / "embeddings")
    assert [(c.kind, c.name, c.tag) for c in cards] == [
        ("lora", "ink", "<lora:ink:1>"),
        ("embedding", "bad-hands", "bad-hands"),
    ]
    assert cards[0].preview == tmp_path / "Lora" / "sub" / "ink.preview.png" and cards[1].preview is None
    items = gallery_items(cards)
    assert items[0] == (str(cards[0].preview), "ink (lora)") and items[1][1] == "bad-hands (embedding)"
    assert items[1][0].size == (160, 160)  # a drawn placeholder card
    assert list_cards(tmp_path / "none", tmp_path / "none") == []


def test_a_click_adds_a_tag_and_a_second_click_removes_it() -> None:
    assert toggle_tag("a cat", "<lora:ink:1>") == "a cat <lora:ink:1>"
    assert toggle_tag("a cat <lora:ink:0.6>, outdoors", "<lora:ink:1>") == "a cat, outdoors"
    assert toggle_tag("", "bad-hands") == "bad-hands"
    assert toggle_tag("a cat bad-hands", "bad-hands") == "a cat"
    assert toggle_tag("a cat <lora:inkwell:1>", "<lora:ink:1>") == "a cat <lora:inkwell:1> <lora:ink:1>"
