"""CLIP text encoding with A1111's 75-token chunks, through one or more text encoders.

A prompt longer than 75 tokens is split into chunks of 75 (`engine.conditioning.tokens`), each
wrapped in BOS/EOS and padded to 77, encoded separately and concatenated along the sequence axis,
so nothing is silently cut off.
Emphasis ("(red:1.3)") scales token embeddings and BREAK starts a chunk (engine.conditioning.
prompt_parser). A plain prompt of ≤ 75 tokens gives exactly what diffusers' pipeline computes.

A family with several encoders (SDXL: CLIP-L and OpenCLIP-G) runs every chunk through each, with
emphasis applied per encoder as A1111 does, and concatenates their hidden states along the width;
the pooled projection of the first chunk is the pooled embedding (A1111's choice): OpenCLIP-G's for
SDXL, CLIP-L's and CLIP-G's side by side for SD 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.conditioning.embeddings import inject
from engine.conditioning.text_cond import TextCond
from engine.conditioning.tokens import PromptChunk

# Emphasis beyond this is no longer a weight but an overflow: even (word:1000) is far past any
# useful emphasis, and fp16 overflows near 65 504 once a weight multiplies an embedding.
MAX_WEIGHT = 1000.0

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")  # A1111's "emphasis" option


@dataclass(frozen=True)
class ClipEncoder:
    """One text encoder as a family uses it (engine.models.families says which)."""

    tokenizer: Any
    model: Any
    native_layer: int = 1  # 1: the last hidden layer; 2: the penultimate (SDXL)
    final_norm: bool = True  # an earlier layer goes through the final layer norm (SD1/2)
    pooled: bool = False  # this encoder's projected end-token output is the pooled embedding


@torch.no_grad()
def encode_chunks(
    encoders: Sequence[ClipEncoder],
    chunks: list[PromptChunk],
    device: torch.device,
    emphasis: str = "Original",
    clip_skip: int = 1,
) -> TextCond:
    """[n_chunks, 77, Σ widths] hidden states (and [n_chunks, Σ pooled widths] of the encoders
    that give the pooled embedding: SDXL's OpenCLIP-G; SD 3's CLIP-L and CLIP-G) of every chunk
    through every encoder."""
    hidden, pooled = [], []
    for encoder in encoders:
        h, p = encode_weighted(encoder.model, chunks, device, emphasis, clip_skip, encoder=encoder)
        hidden.append(h)
        if encoder.pooled:
            pooled.append(p)
    joined = torch.cat(pooled, dim=-1) if len(pooled) > 1 else (pooled[0] if pooled else None)
    return TextCond(torch.cat(hidden, dim=-1) if len(hidden) > 1 else hidden[0], joined)


def _padded_ids(chunks: list[PromptChunk], tokenizer: Any, device: torch.device) -> torch.Tensor:
    """The chunks' ids for one encoder: chunks end in end tokens (A1111), and an encoder whose
    tokenizer pads with another token (OpenCLIP: "!") gets that after the first end token, as
    A1111 and the diffusers tokenizers give it."""
    ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=device)
    pad, eos = getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if pad is None or eos is None or pad == eos:
        return ids
    is_eos = (ids == eos).long()
    after_first = (is_eos.cumsum(dim=1) - is_eos) > 0  # strictly after the first end token
    return ids.masked_fill(after_first, pad)


@torch.no_grad()
def encode_weighted(
    text_encoder,
    chunks: list[PromptChunk],
    device: torch.device,
    emphasis: str = "Original",
    clip_skip: int = 1,
    *,
    encoder: ClipEncoder | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([n_chunks, 77, hidden] embeddings with emphasis applied as A1111 does, the pooled
    projection [n_chunks, width] where the encoder has one).

    "Original": each token's embedding scaled by its weight, then the chunk rescaled to its
    unweighted mean; "No norm": scaled, not rescaled; "Ignore" and "None": weights unused. A chunk
    whose weights are all 1 is left exactly as the encoder made it. `clip_skip` N > 1 takes the
    hidden state N - 1 layers before the last, through the final layer norm, as A1111 does; a
    family trained on the penultimate layer (SDXL) uses it for CLIP skip 1 and 2 alike, without
    the final norm, and goes deeper from 3 on.
    """
    encoder = encoder or ClipEncoder(None, text_encoder)
    layer = max(encoder.native_layer, clip_skip)
    ids = _padded_ids(chunks, encoder.tokenizer, device)
    with inject(text_encoder, [c.fixes for c in chunks]):
        out = text_encoder(ids, output_hidden_states=layer > 1)
    # the projection where the encoder has one (SDXL, SD 3), else the pooled end token (Flux's CLIP-L)
    pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        pooled = getattr(out, "pooler_output", None)
    if layer > 1:
        hidden = out.hidden_states[-layer]
        if encoder.final_norm:
            # transformers 5 keeps the layer norm on the model; 4.x on its `text_model`
            hidden = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    else:
        hidden = out[0]
    if emphasis in ("Original", "No norm"):
        _check_weights(chunks)
    weights = torch.tensor([c.weights for c in chunks], dtype=torch.float32, device=device)
    weighted = (weights != 1).any(dim=1)
    if emphasis in ("Original", "No norm") and weighted.any():
        z = hidden[weighted].float()
        before = z.mean(dim=(1, 2), keepdim=True)
        z = z * weights[weighted][..., None]
        if emphasis == "Original":
            z = z * (before / z.mean(dim=(1, 2), keepdim=True))
        hidden = hidden.clone()
        hidden[weighted] = z.to(hidden.dtype)
    return hidden, pooled


def clip_layers(text_encoder) -> int:
    """How many transformer layers the text encoder has: the largest CLIP skip it allows."""
    return int(text_encoder.config.num_hidden_layers)


def _check_weights(chunks: list[PromptChunk]) -> None:
    """A weight past float range (brackets nested hundreds deep: ×1.1 per level) would turn the
    whole picture to NaN; say so instead of drawing a black picture."""
    largest = max((abs(w) for chunk in chunks for w in chunk.weights), default=1.0)
    if not largest <= MAX_WEIGHT:  # (also catches inf and NaN)
        raise ValueError(
            f"a prompt weight is beyond {MAX_WEIGHT:g} (each level of ( ) multiplies a word's weight "
            "by 1.1, of [ ] divides it by 1.1): use fewer brackets or a weight such as (word:1.5)"
        )
