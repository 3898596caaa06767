"""A prompt's conditioning over the whole run: prompt editing, alternation and composable AND.

`encode_conditioning` turns (prompt, negative prompt, steps) into a `Conditioning`: for the
positive side one `ScheduledCond` per AND-ed sub-prompt with its weight, for the negative side one
`ScheduledCond`. Each schedule is A1111's list of (end_at_step, embedding); the sampler asks for
the embeddings at a step with `Conditioning.at(step)`.

Every distinct text is encoded once (keyed by its tokens and weights: "[a:b:10]" and "a AND [a|b]"
cost two encodings, not one per step), and all embeddings are padded with empty chunks to one length so
that conditional and unconditional passes share one batch, as A1111 pads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from engine.conditioning.clip import ClipEncoder, encode_chunks
from engine.conditioning.embeddings import EmbeddingDatabase
from engine.conditioning.prompt_parser import prompt_schedule, split_and
from engine.conditioning.t5 import T5Encoder
from engine.conditioning.text_cond import TextCond
from engine.conditioning.tokens import CHUNK_TOKENS, PromptChunk, tokenize_weighted


@dataclass(frozen=True)
class ScheduledCond:
    """(end_at_step, embedding [1, tokens, hidden] + pooled) pairs; entry i holds while step ≤ end_at_step."""

    entries: tuple[tuple[int, TextCond], ...]

    def at(self, step: int) -> TextCond:
        for end, embedding in self.entries:
            if step <= end:
                return embedding
        return self.entries[-1][1]

    @property
    def changes(self) -> bool:
        return len(self.entries) > 1


@dataclass(frozen=True)
class Conditioning:
    """Everything the guider needs: weighted positive schedules (AND) and the negative schedule."""

    cond: tuple[tuple[ScheduledCond, float], ...]
    uncond: ScheduledCond
    embeddings_used: tuple[tuple[str, str], ...] = ()  # (name, short hash) for "TI hashes"

    def at(self, step: int) -> tuple[list[TextCond], list[float], TextCond]:
        """([cond embedding per sub-prompt], [weights], uncond embedding) at a 0-based step."""
        return [c.at(step) for c, _ in self.cond], [w for _, w in self.cond], self.uncond.at(step)

    @classmethod
    def constant(cls, cond: TextCond | torch.Tensor, uncond: TextCond | torch.Tensor) -> Conditioning:
        """One prompt and one negative prompt for every step (embeddings [1, tokens, hidden])."""
        cond, uncond = TextCond.of(cond), TextCond.of(uncond)
        return cls(((ScheduledCond(((0, cond),)), 1.0),), ScheduledCond(((0, uncond),)))

    @property
    def is_single(self) -> bool:
        """One sub-prompt of weight 1 (no AND): at CFG 1 the negative prompt has no effect."""
        return len(self.cond) == 1 and self.cond[0][1] == 1.0

    @property
    def changes(self) -> bool:
        return self.uncond.changes or any(c.changes for c, _ in self.cond)

    def to(self, *args, **kwargs) -> Conditioning:
        """Every embedding `.to(...)` (a dtype, a device)."""

        def cast(s: ScheduledCond) -> ScheduledCond:
            return ScheduledCond(tuple((end, e.to(*args, **kwargs)) for end, e in s.entries))

        cond = tuple((cast(c), w) for c, w in self.cond)
        return Conditioning(cond, cast(self.uncond), self.embeddings_used)


def encode_conditioning(
    encoders: ClipEncoder | list[ClipEncoder],
    prompt: str,
    negative: str,
    steps: int,
    device: torch.device,
    *,
    emphasis: str = "Original",
    clip_skip: int = 1,
    embeddings: EmbeddingDatabase | None = None,
    zero_empty_negative: bool = False,
    sequence: T5Encoder | None = None,
    clip_in_sequence: bool = True,
) -> Conditioning:
    """The run's conditioning; each distinct text of any schedule goes through CLIP exactly once.
    `encoders`: the model's text encoders as its family uses them (tokenized with the first's
    tokenizer: CLIP tokenizers differ only in their pad). `emphasis` is one of `EMPHASIS_MODES`;
    `clip_skip` 1 uses the family's own layer; names of `embeddings` in the prompts are replaced
    by their vectors. `zero_empty_negative`: an empty negative prompt is all zeros (SDXL).
    `sequence`: a T5 encoder whose tokens follow CLIP's (SD 3): CLIP's hidden states are padded
    with zeros to T5's width and T5's sequence is appended, as the reference pipeline joins them;
    with `clip_in_sequence` False (Flux) T5's sequence is the whole of it, CLIP giving the pooled
    embedding only."""
    encoders = [encoders] if isinstance(encoders, ClipEncoder) else list(encoders)
    tokenizer = encoders[0].tokenizer
    positive = [(prompt_schedule(text, steps), weight) for text, weight in split_and(prompt)]
    negative_schedule = prompt_schedule(negative, steps)
    texts = [e.text for schedule, _ in positive for e in schedule] + [e.text for e in negative_schedule]
    # Keyed by what CLIP sees (tokens and weights), so " a cat" and "a cat" share one encoding.
    table = embeddings.token_table(tokenizer) if embeddings is not None else None
    chunks_of = {
        text: tokenize_weighted(tokenizer, text, emphasis=emphasis, embeddings=table)[0]
        for text in dict.fromkeys(texts)
    }
    key_of = {text: tuple(_chunk_key(c) for c in ch) for text, ch in chunks_of.items()}
    used = {emb.name: emb.short_hash for ch in chunks_of.values() for c in ch for _, emb in c.fixes}
    distinct = {key_of[text]: chunks_of[text] for text in chunks_of}
    n = max(len(c) for c in distinct.values())
    empty = tokenize_weighted(tokenizer, "", emphasis=emphasis)[0][0]
    flat: list[PromptChunk] = []
    for chunks in distinct.values():  # pad every text to n chunks so all embeddings batch together
        flat += chunks + [empty] * (n - len(chunks))
    encoded = encode_chunks(encoders, flat, device, emphasis=emphasis, clip_skip=clip_skip)
    hidden, pooled = encoded.hidden, encoded.pooled
    width = hidden.shape[-1]
    hidden = hidden.reshape(len(distinct), -1, width)
    if sequence is not None:
        text_of = {key_of[text]: text for text in chunks_of}
        t5 = sequence.encode([text_of[key] for key in distinct], device, emphasis).to(hidden.dtype)
        if clip_in_sequence:
            padded = torch.nn.functional.pad(hidden, (0, t5.shape[-1] - width))
            hidden = torch.cat([padded, t5], dim=1)
        else:
            hidden = t5
    by_key = {  # pooled: of the text's first chunk, as A1111 takes it
        key: TextCond(hidden[i : i + 1], None if pooled is None else pooled[i * n : i * n + 1])
        for i, key in enumerate(distinct)
    }
    embedding = {text: by_key[key_of[text]] for text in chunks_of}

    def scheduled(schedule) -> ScheduledCond:
        return ScheduledCond(tuple((e.end_at_step, embedding[e.text]) for e in schedule))

    uncond = scheduled(negative_schedule)
    if zero_empty_negative and negative == "":
        uncond = ScheduledCond(tuple((end, e.zeros_like()) for end, e in uncond.entries))
    return Conditioning(
        tuple((scheduled(s), w) for s, w in positive),
        uncond,
        tuple(sorted(used.items())),
    )


def _chunk_key(chunk: PromptChunk) -> tuple:
    """What CLIP sees for a chunk: ids, weights and which embedding vectors go where."""
    fixes = tuple((offset, emb.name, emb.sha256) for offset, emb in chunk.fixes)
    return tuple(chunk.tokens), tuple(chunk.weights), fixes


def token_counter(
    tokenizer,
    prompt: str,
    steps: int,
    *,
    is_negative: bool = False,
    embeddings: EmbeddingDatabase | None = None,
) -> tuple[int, int]:
    """(tokens used, token limit) as A1111's counter beside a prompt box shows them: the longest
    text the prompt takes over the run (every AND-ed sub-prompt and schedule entry), and the limit
    of the chunks it fills (75, 150, ...). An embedding counts one token per vector; <lora:...>
    tags count nothing (they are not sent to CLIP)."""
    from engine.models.lora import extract_lora_tags

    try:
        prompt = extract_lora_tags(prompt)[0]
    except ValueError:
        pass  # a half-typed tag: count it as text
    parts = [(prompt, 1.0)] if is_negative else split_and(prompt)
    texts = [entry.text for text, _ in parts for entry in prompt_schedule(text, steps)]
    table = embeddings.token_table(tokenizer) if embeddings is not None else None
    used = max(tokenize_weighted(tokenizer, text, embeddings=table)[1] for text in texts)
    return used, CHUNK_TOKENS * max(1, -(-used // CHUNK_TOKENS))


@lru_cache(maxsize=1)
def _clip_tokenizer():
    from engine.models.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer()


def count_prompt_tokens(
    prompt: str, steps: int, *, is_negative: bool = False, embeddings: EmbeddingDatabase | None = None
) -> tuple[int, int]:
    """`token_counter` with the CLIP tokenizer every SD 1.x/2.x model shares: no model needed."""
    return token_counter(_clip_tokenizer(), prompt, steps, is_negative=is_negative, embeddings=embeddings)
