"""Prompts → CLIP token chunks, A1111's way: 75 tokens per chunk between BOS and EOS, emphasis
weights per token, BREAK, comma backtracking, and the placeholder slots of textual-inversion
embeddings. `engine.conditioning.clip` encodes the chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.conditioning.prompt_parser import BREAK, parse_emphasis

CHUNK_TOKENS = 75


# The id of a textual-inversion slot before its vectors replace it: "!" (0), as in A1111. Not the
# end token: CLIP's pooled output is read at the first end token.
PLACEHOLDER = 0


def tokenize_chunks(tokenizer, text: str) -> list[list[int]]:
    """Token ids of `text` as chunks of 77 (BOS + ≤75 tokens + EOS, padded with EOS as A1111 does;
    an OpenCLIP encoder's pad replaces what follows the first EOS at encoding time)."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    chunks = [ids[i : i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)] or [[]]
    return [[bos, *c, eos] + [eos] * (CHUNK_TOKENS - len(c)) for c in chunks]


@dataclass
class PromptChunk:
    """77 token ids (BOS + 75 + EOS) and the emphasis weight of each."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    # (offset among the 77 ids, embedding): textual-inversion vectors that replace the placeholder
    # ids from that offset on (engine.conditioning.embeddings.inject)
    fixes: list[tuple[int, Any]] = field(default_factory=list)


COMMA_BACKTRACK = 20  # A1111's "comma padding backtrack" default


def tokenize_weighted(
    tokenizer,
    text: str,
    comma_backtrack: int = COMMA_BACKTRACK,
    emphasis: str = "Original",
    embeddings: list[tuple[list[int], Any]] | None = None,
) -> tuple[list[PromptChunk], int]:
    """(chunks, tokens used) of a prompt with emphasis and BREAK, chunked as A1111 does.

    Each emphasis run is tokenized on its own; with emphasis "None" the text is not parsed at all
    (brackets and BREAK are plain words), as A1111 does. `embeddings` ((name ids, Embedding),
    longest first) turns each occurrence of a name into one slot per vector; an embedding that does
    not fit in the current chunk starts the next one. `BREAK` starts a new chunk. A chunk that fills up
    within `comma_backtrack` tokens of its last comma is cut after that comma, and the words after
    it move to the next chunk, so a phrase is not split across two chunks. Padding is EOS (A1111);
    `engine.conditioning.clip` turns it into an OpenCLIP encoder's pad after the first EOS.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = eos
    # one lookup, not get_vocab(): that copies the 49,408-entry vocabulary (~18 ms) on every call
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    used = 0
    last_comma = -1

    def close(is_last: bool = False) -> None:
        nonlocal chunk, used, last_comma
        used += len(chunk.tokens) if is_last else CHUNK_TOKENS
        missing = CHUNK_TOKENS - len(chunk.tokens)
        chunk.tokens = [bos, *chunk.tokens, *[pad] * missing, eos]
        chunk.weights = [1.0, *chunk.weights, *[1.0] * missing, 1.0]
        chunks.append(chunk)
        chunk, last_comma = PromptChunk(), -1

    def add(token: int, weight: float) -> None:
        nonlocal chunk, last_comma
        if token == comma:
            last_comma = len(chunk.tokens)
        elif (
            comma_backtrack
            and len(chunk.tokens) == CHUNK_TOKENS
            and last_comma != -1
            and len(chunk.tokens) - last_comma <= comma_backtrack
        ):
            cut = last_comma + 1
            moved = PromptChunk(
                chunk.tokens[cut:],
                chunk.weights[cut:],
                [(offset - cut, emb) for offset, emb in chunk.fixes if offset - 1 >= cut],
            )
            chunk.tokens, chunk.weights = chunk.tokens[:cut], chunk.weights[:cut]
            chunk.fixes = [(offset, emb) for offset, emb in chunk.fixes if offset - 1 < cut]
            close()
            chunk = moved
        if len(chunk.tokens) == CHUNK_TOKENS:
            close()
        chunk.tokens.append(token)
        chunk.weights.append(weight)

    def add_embedding(emb: Any, weight: float) -> None:
        n = len(emb.vectors)
        if len(chunk.tokens) + n > CHUNK_TOKENS and n <= CHUNK_TOKENS:
            close()
        chunk.fixes.append((len(chunk.tokens) + 1, emb))  # + 1: BOS comes first
        for _ in range(n):  # placeholder ids; their embeddings are replaced
            chunk.tokens.append(PLACEHOLDER)
            chunk.weights.append(weight)

    runs = [(text, 1.0)] if emphasis == "None" else parse_emphasis(text)
    pieces = tokenizer([t for t, _ in runs], add_special_tokens=False, truncation=False)["input_ids"]
    table = embeddings or []
    for (run_text, weight), ids in zip(runs, pieces, strict=True):
        if (run_text, weight) == BREAK:
            close()
            continue
        i = 0
        while i < len(ids):
            match = next(((name, emb) for name, emb in table if ids[i : i + len(name)] == name), None)
            if match is not None:
                add_embedding(match[1], weight)
                i += len(match[0])
                continue
            add(ids[i], weight)
            i += 1
    if chunk.tokens or not chunks:
        close(is_last=True)
    return chunks, used
