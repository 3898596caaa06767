"""Weighted 75-token chunks as A1111 builds them: emphasis weights per token, BREAK, comma
backtracking, EOS padding and the token count the prompt-box counter shows."""

from __future__ import annotations

import pytest

from engine.conditioning.tokens import CHUNK_TOKENS, tokenize_chunks, tokenize_weighted
from engine.models.tokenizer import load_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_plain_prompt_is_one_chunk_identical_to_the_unweighted_one(tokenizer):
    chunks, used = tokenize_weighted(tokenizer, "a large red circle at the top left")
    assert [c.tokens for c in chunks] == tokenize_chunks(tokenizer, "a large red circle at the top left")
    assert chunks[0].weights == [1.0] * (CHUNK_TOKENS + 2)
    assert used == len(ids(tokenizer, "a large red circle at the top left"))


def test_emphasis_weights_land_on_their_tokens(tokenizer):
    (chunk,), used = tokenize_weighted(tokenizer, "a (red:1.5) [circle]")
    a, red, circle = ids(tokenizer, "a"), ids(tokenizer, "red"), ids(tokenizer, "circle")
    n = len(a) + len(red) + len(circle)
    assert used == n
    assert chunk.tokens[1 : 1 + n] == a + red + circle
    assert chunk.weights[1 : 1 + n] == pytest.approx(
        [1.0] * len(a) + [1.5] * len(red) + [1 / 1.1] * len(circle)
    )
    assert chunk.weights[1 + n :] == [1.0] * (CHUNK_TOKENS + 1 - n)  # padding and EOS keep 1


def test_break_starts_a_new_padded_chunk(tokenizer):
    chunks, used = tokenize_weighted(tokenizer, "red circle BREAK blue background")
    assert len(chunks) == 2
    first = ids(tokenizer, "red circle")
    assert chunks[0].tokens[1 : 1 + len(first)] == first
    assert set(chunks[0].tokens[1 + len(first) :]) == {tokenizer.eos_token_id}
    assert chunks[1].tokens[1:3] == ids(tokenizer, "blue background")
    assert used == CHUNK_TOKENS + 2  # a closed chunk counts whole, as A1111's counter does
    assert all(len(c.tokens) == len(c.weights) == CHUNK_TOKENS + 2 for c in chunks)


def test_a_full_chunk_is_cut_after_its_last_comma(tokenizer):
    words = ["circle"] * 70 + [","] + ["star"] * 10  # the comma is the 71st token
    chunks, used = tokenize_weighted(tokenizer, " ".join(words))
    assert len(chunks) == 2 and used == CHUNK_TOKENS + 10
    circle, comma, star = ids(tokenizer, "circle")[0], ids(tokenizer, ",")[0], ids(tokenizer, "star")[0]
    assert chunks[0].tokens[1:72] == [circle] * 70 + [comma]  # cut right after the comma...
    assert set(chunks[0].tokens[72:]) == {tokenizer.eos_token_id}
    assert chunks[1].tokens[1:11] == [star] * 10  # ...and the 4 stars after it moved on
    plain, _ = tokenize_weighted(tokenizer, " ".join(words), comma_backtrack=0)
    assert plain[0].tokens[1:76] == [circle] * 70 + [comma] + [star] * 4  # without backtracking


def test_long_prompts_keep_every_token(tokenizer):
    chunks, used = tokenize_weighted(tokenizer, " ".join(["square"] * 200))
    assert len(chunks) == 3 and used == 200
    assert sum(t == ids(tokenizer, "square")[0] for c in chunks for t in c.tokens) == 200


def test_the_empty_prompt_is_one_padded_chunk(tokenizer):
    chunks, used = tokenize_weighted(tokenizer, "")
    assert [c.tokens for c in chunks] == tokenize_chunks(tokenizer, "") and used == 0


def test_emphasis_scales_embeddings_and_keeps_the_chunk_mean(builtin_model):
    import torch

    from engine.conditioning.clip import ClipEncoder, encode_weighted
    from engine.conditioning.schedule import encode_conditioning

    tok, te, cpu = builtin_model.tokenizer, builtin_model.text_encoder, torch.device("cpu")
    plain = encode_conditioning(ClipEncoder(tok, te), "a red circle", "", 20, cpu).at(0)[0][0].hidden
    with torch.no_grad():  # a plain prompt is exactly the encoder's output, as diffusers has it
        reference = te(torch.tensor(tokenize_chunks(tok, "a red circle")))[0]
    assert torch.equal(plain[0], reference[0])

    chunks, _ = tokenize_weighted(tok, "a (red:1.5) circle")
    weighted = encode_weighted(te, chunks, cpu)[0][0]
    assert torch.allclose(weighted.mean(), reference[0].mean(), atol=1e-6)  # mean restored
    red = 2  # BOS, "a", then "red"
    ratio = weighted[red].norm() / reference[0][red].norm()
    others = weighted[1].norm() / reference[0][1].norm()
    assert float(ratio / others) == pytest.approx(1.5, rel=1e-4)  # red scaled 1.5× relative to the rest
