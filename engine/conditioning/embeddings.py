"""Textual-inversion embeddings from `embeddings/`, used by file name in a prompt.

A file `embeddings/my-style.pt` is used by writing `my-style` in a prompt: where the tokens of that
name appear, the embedding's vectors take their place (one token slot per vector), as in A1111.
Formats read (pickles only through the restricted unpickler of `engine.models.safe_pickle`):
- A1111 `.pt`: {"string_to_param": {"*": [n, dim]}, "name": ..., ...};
- A1111 `.safetensors`: {"emb_params": [n, dim]};
- diffusers `.bin` / `.safetensors` (`learned_embeds`): {"<token>": [dim] or [n, dim]};
- SDXL files ({"clip_l", "clip_g"}) are read for their `clip_l` part only where it fits.
A file whose vectors do not have the text encoder's width is listed as skipped, with the reason.
The vectors are put in with a forward hook on CLIP's token-embedding layer that is removed as soon
as the batch is encoded (`inject`): the shared model itself is never modified.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.conditioning.tokens import CHUNK_TOKENS
from engine.models.hashing import sha256_of_file

log = logging.getLogger(__name__)

SUFFIXES = (".pt", ".bin", ".safetensors")
TI_HASH_LEN = 12  # A1111 writes the first 12 hex digits of the file's SHA-256 into "TI hashes"


@dataclass(frozen=True)
class Embedding:
    name: str
    vectors: torch.Tensor  # [n, dim], float32
    sha256: str

    @property
    def short_hash(self) -> str:
        return self.sha256[:TI_HASH_LEN]


def _vectors_of(data: object, name: str) -> torch.Tensor:
    if not isinstance(data, dict):
        raise ValueError(f"{name}: not an embedding (found {type(data).__name__})")
    if isinstance(data.get("string_to_param"), dict):  # A1111 .pt
        params = list(data["string_to_param"].values())
        if len(params) != 1:
            raise ValueError(f"{name}: expected one embedding in string_to_param, found {len(params)}")
        tensor = params[0]
    elif "emb_params" in data:  # A1111 .safetensors
        tensor = data["emb_params"]
    elif "clip_l" in data:  # SDXL pair: the SD 1.x-width half
        tensor = data["clip_l"]
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:  # diffusers learned_embeds: one "<token>" key
            raise ValueError(f"{name}: no embedding found (keys: {', '.join(map(str, list(data)[:5]))})")
        tensor = tensors[0]
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (1, 2) or tensor.numel() == 0:
        raise ValueError(f"{name}: the embedding is not a [vectors, width] tensor")
    return tensor.detach().reshape(-1, tensor.shape[-1]).float().cpu()


def load_embedding(path: Path) -> Embedding:
    """One embedding file; raises ValueError with a readable message for anything else."""
    from engine.models.safe_pickle import load_pickle_checkpoint

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data: object = load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValueError(f"{path.name}: not a valid .safetensors file: {exc}") from exc
    else:
        data = load_pickle_checkpoint(path)
    return Embedding(path.stem, _vectors_of(data, path.name), sha256_of_file(path))


@dataclass
class EmbeddingDatabase:
    """The embeddings of a folder that fit a text encoder of width `dim` (re-scanned on `load`)."""

    folder: Path
    dim: int
    embeddings: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why

    @classmethod
    def load(cls, folder: Path, dim: int) -> EmbeddingDatabase:
        db = cls(Path(folder), dim)
        if not db.folder.is_dir():
            return db
        for path in sorted(p for p in db.folder.rglob("*") if p.suffix.lower() in SUFFIXES):
            try:
                embedding = load_embedding(path)
            except (ValueError, OSError, RuntimeError) as exc:
                db.skipped[path.stem] = str(exc)
                continue
            n, width = embedding.vectors.shape
            if width != dim:
                db.skipped[path.stem] = f"{path.name}: width {width}, this model's text encoder has {dim}"
                continue
            if n > CHUNK_TOKENS:
                db.skipped[path.stem] = f"{path.name}: {n} vectors, more than a {CHUNK_TOKENS}-token chunk"
                continue
            db.embeddings[embedding.name] = embedding
        if db.skipped:
            log.info("embeddings skipped: %s", "; ".join(db.skipped.values()))
        return db

    def token_table(self, tokenizer) -> list[tuple[list[int], Embedding]]:
        """(token ids of the name, embedding), longest names first, for matching in a prompt."""
        table = [
            (tokenizer(name, add_special_tokens=False)["input_ids"], emb)
            for name, emb in self.embeddings.items()
        ]
        return sorted((row for row in table if row[0]), key=lambda row: -len(row[0]))


@contextlib.contextmanager
def inject(text_encoder, fixes: list[list[tuple[int, Embedding]]]) -> Iterator[None]:
    """While active, row b of a batch has embedding vectors at token offsets `fixes[b]`
    (offset counted within the 77 ids, BOS at 0). No fixes: nothing is hooked."""
    if not any(fixes):
        yield
        return
    layer = text_encoder.get_input_embeddings()

    def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, row_fixes in enumerate(fixes):
            for offset, emb in row_fixes:
                n = min(len(emb.vectors), output.shape[1] - offset)
                output[row, offset : offset + n] = emb.vectors[:n].to(
                    device=output.device, dtype=output.dtype
                )
        return output

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
