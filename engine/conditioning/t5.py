"""T5 text encoding, for the families that follow CLIP's tokens with T5's (SD 3; Flux next).

T5 reads the prompt's words without the emphasis syntax ("(red:1.3)" is "red"; BREAK is dropped):
the weights act on the CLIP encoders, as Forge applies them. Each chunk is up to 255 tokens, then
"</s>", padded to 256 with "<pad>", which is exactly how the reference pipelines tokenize a prompt
of up to 255 tokens (`max_length=256`, `padding="max_length"`, no attention mask). A longer prompt
gets more chunks, encoded one by one and joined along the sequence, instead of being cut off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.conditioning.prompt_parser import BREAK, parse_emphasis


def plain_text(text: str, emphasis: str = "Original") -> str:
    """The words of a prompt without emphasis brackets and weights (as written with emphasis
    "None": A1111 then leaves brackets as words)."""
    if emphasis == "None":
        return text
    return "".join(run for run, weight in parse_emphasis(text) if (run, weight) != BREAK)


@dataclass(frozen=True)
class T5Encoder:
    tokenizer: Any  # a T5 tokenizer from the user's files; None with `model`
    model: Any  # transformers T5EncoderModel; None: a checkpoint without T5, whose tokens are zeros
    tokens: int = 256  # per chunk, the end token and padding included
    width: int = 4096  # the zeros' width without a model (the network's joint attention width)

    def chunks(self, text: str, emphasis: str = "Original") -> list[list[int]]:
        words = plain_text(text, emphasis)
        ids = self.tokenizer(words, add_special_tokens=False, truncation=False)["input_ids"]
        room = self.tokens - 1
        pieces = [ids[i : i + room] for i in range(0, len(ids), room)] or [[]]
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        return [[*piece, eos, *[pad] * (room - len(piece))] for piece in pieces]

    @torch.no_grad()
    def encode(self, texts: list[str], device: torch.device, emphasis: str = "Original") -> torch.Tensor:
        """[len(texts), n·tokens, width]: every text padded to the most chunks any of them needs
        (with the empty prompt's chunk), so that they batch together like CLIP's chunks."""
        if self.model is None:
            return torch.zeros(len(texts), self.tokens, self.width, device=device)
        per_text = [self.chunks(text, emphasis) for text in texts]
        n = max(len(chunks) for chunks in per_text)
        empty = self.chunks("")[0]
        flat = [chunk for chunks in per_text for chunk in chunks + [empty] * (n - len(chunks))]
        hidden = self.model(torch.tensor(flat, dtype=torch.long, device=device))[0]
        return hidden.reshape(len(texts), n * self.tokens, hidden.shape[-1])
