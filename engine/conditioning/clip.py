"""CLIP text encoding with A1111's 75-token chunks.

A prompt longer than 75 tokens is split into chunks of 75, each wrapped in BOS/EOS and padded to
77, encoded separately and concatenated along the sequence axis, so nothing is silently cut off.
A prompt of ≤ 75 tokens gives exactly what diffusers' pipeline computes.
"""

from __future__ import annotations

import torch

CHUNK_TOKENS = 75


def tokenize_chunks(tokenizer, text: str) -> list[list[int]]:
    """Token ids of `text` as chunks of 77 (BOS + ≤75 tokens + EOS, padded)."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    chunks = [ids[i : i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)] or [[]]
    return [[bos, *c, eos] + [pad] * (CHUNK_TOKENS - len(c)) for c in chunks]


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])


@torch.no_grad()
def encode_chunks(text_encoder, chunks: list[list[int]], device: torch.device) -> torch.Tensor:
    """[1, 77·n_chunks, hidden] embeddings for the chunked prompt."""
    ids = torch.tensor(chunks, dtype=torch.long, device=device)
    hidden = text_encoder(ids)[0]  # [n_chunks, 77, hidden]
    return hidden.reshape(1, -1, hidden.shape[-1])


def encode_prompt_pair(
    tokenizer, text_encoder, prompt: str, negative: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond), padded to the same number of chunks with empty chunks as A1111 does."""
    cond_chunks = tokenize_chunks(tokenizer, prompt)
    uncond_chunks = tokenize_chunks(tokenizer, negative)
    empty = tokenize_chunks(tokenizer, "")[0]
    n = max(len(cond_chunks), len(uncond_chunks))
    cond_chunks += [empty] * (n - len(cond_chunks))
    uncond_chunks += [empty] * (n - len(uncond_chunks))
    both = encode_chunks(text_encoder, cond_chunks + uncond_chunks, device)
    return both[:, : 77 * n], both[:, 77 * n :]
