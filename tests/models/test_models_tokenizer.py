"""The offline CLIP tokenizer must give OpenAI CLIP's ids (SD was trained on them)."""

from __future__ import annotations

from pathlib import Path

from engine.models.tokenizer import (
    N_MERGES,
    VOCAB_SIZE,
    clip_vocab_and_merges,
    ensure_tokenizer_dir,
    load_clip_tokenizer,
)


def test_vocab_and_merges_sizes_and_order() -> None:
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE == 49408
    assert len(merges) == N_MERGES == 48894
    # SimpleTokenizer's order: 256 byte chars, the same with </w>, the merges, then the specials.
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["".join(merges[0].split(" "))] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_known_openai_clip_ids() -> None:
    tok = load_clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # lower-casing, punctuation and accents behave like OpenAI's tokenizer (ids checked against
    # open_clip's SimpleTokenizer when this test was written)
    assert tok("A photo of a CAT, painting!! 2024 héllo").input_ids == [
        49406, 320, 1125, 539, 320, 2368, 267, 3086, 748, 273, 271, 273, 275, 71, 3459, 19293, 49407,
    ]  # fmt: skip
    assert tok.model_max_length == 77
    assert tok.pad_token_id == 49407


def test_sd2_pad_token_is_exclamation_mark() -> None:
    tok = load_clip_tokenizer(pad_token="!")
    assert tok.pad_token_id == 0
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:5] == [49406, 320, 2368, 49407, 0] and len(ids) == 77


def test_generated_files(tmp_path: Path) -> None:
    folder = ensure_tokenizer_dir(tmp_path / "tok", pad_token="!")
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    for name in ("vocab.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (folder / name).is_file()
    assert '"pad_token": "!"' in (folder / "special_tokens_map.json").read_text()
    # asking for another pad token rewrites the folder
    ensure_tokenizer_dir(folder, pad_token="<|endoftext|>")
    assert '"pad_token": "<|endoftext|>"' in (folder / "special_tokens_map.json").read_text()
