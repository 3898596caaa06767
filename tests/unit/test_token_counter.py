"""The token counter beside the prompt boxes counts what A1111's does."""

from __future__ import annotations

from engine.conditioning.schedule import count_prompt_tokens


def test_plain_prompts_count_their_tokens_against_the_chunk_limit() -> None:
    assert count_prompt_tokens("", 20) == (0, 75)
    assert count_prompt_tokens("a red circle", 20) == (3, 75)
    assert count_prompt_tokens("a (red:1.5) [circle]", 20) == (3, 75)  # emphasis syntax is not counted
    long = ", ".join(["a red circle"] * 30)  # 30 × 3 words + 29 commas = 119 tokens
    assert count_prompt_tokens(long, 20) == (119, 150)


def test_breaks_count_the_padding_of_the_chunks_they_close() -> None:
    assert count_prompt_tokens("a red circle BREAK a blue star", 20) == (78, 150)


def test_the_longest_text_of_the_run_is_counted() -> None:
    long = ", ".join(["a red circle"] * 30)
    assert count_prompt_tokens(f"[a cat:{long}:10]", 20) == (119, 150)  # the edited-in text
    assert count_prompt_tokens(f"a cat AND {long}:0.5", 20) == (119, 150)  # sub-prompts: max, not sum
    # in the negative prompt AND is an ordinary word
    assert count_prompt_tokens("a cat AND a dog", 20, is_negative=True) == (5, 75)


def test_embeddings_count_their_vectors_and_lora_tags_count_nothing(tmp_path) -> None:
    import torch

    from engine.conditioning.embeddings import EmbeddingDatabase

    (tmp_path / "embeddings").mkdir()
    torch.save({"string_to_param": {"*": torch.zeros(6, 64)}}, tmp_path / "embeddings" / "wide-style.pt")
    db = EmbeddingDatabase.load(tmp_path / "embeddings", dim=64)
    assert count_prompt_tokens("a wide-style cat", 20) == (5, 75)  # no model: its name's tokens
    assert count_prompt_tokens("a wide-style cat", 20, embeddings=db) == (8, 75)  # a, 6 vectors, cat
    assert count_prompt_tokens("a cat <lora:ink:0.8>", 20) == (2, 75)
    assert count_prompt_tokens("a cat <lora:ink:", 20)[0] > 2  # half-typed: counted as text
