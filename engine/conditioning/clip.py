"""CLIP text encoding with A1111's 75-token chunks.

A prompt longer than 75 tokens is split into chunks of 75 (`engine.conditioning.tokens`), each
wrapped in BOS/EOS and padded to 77, encoded separately and concatenated along the sequence axis,
so nothing is silently cut off.
Emphasis ("(red:1.3)") scales token embeddings and BREAK starts a chunk (engine.conditioning.
prompt_parser). A plain prompt of ≤ 75 tokens gives exactly what diffusers' pipeline computes.
"""

from __future__ import annotations

import torch

from engine.conditioning.embeddings import inject
from engine.conditioning.tokens import PromptChunk

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")  # A1111's "emphasis" option


@torch.no_grad()
def encode_weighted(
    text_encoder,
    chunks: list[PromptChunk],
    device: torch.device,
    emphasis: str = "Original",
    clip_skip: int = 1,
) -> torch.Tensor:
    """[n_chunks, 77, hidden] embeddings with emphasis applied as A1111 does.

    "Original": each token's embedding scaled by its weight, then the chunk rescaled to its
    unweighted mean; "No norm": scaled, not rescaled; "Ignore" and "None": weights unused. A chunk
    whose weights are all 1 is left exactly as the encoder made it. `clip_skip` N > 1 takes the
    hidden state N - 1 layers before the last, through the final layer norm, as A1111 does.
    """
    ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long, device=device)
    with inject(text_encoder, [c.fixes for c in chunks]):
        if clip_skip > 1:
            out = text_encoder(ids, output_hidden_states=True)
            # transformers 5 keeps the layer norm on the model; 4.x on its `text_model`
            final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
            hidden = final_norm(out.hidden_states[-clip_skip])
        else:
            hidden = text_encoder(ids)[0]
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
    return hidden


def clip_layers(text_encoder) -> int:
    """How many transformer layers the text encoder has: the largest CLIP skip it allows."""
    return int(text_encoder.config.num_hidden_layers)
