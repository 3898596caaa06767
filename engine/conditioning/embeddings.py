"""Textual-inversion embeddings from `embeddings/`, used by file name in a prompt.

A file `embeddings/my-style.pt` is used by writing `my-style` in a prompt: where the tokens of that
name appear, the embedding's vectors take their place (one token slot per vector), as in A1111.
Formats read (pickles only through the restricted unpickler of `engine.models.safe_pickle`):
- A1111 `.pt`: {"string_to_param": {"*": [n, dim]}, "name": ..., ...};
- A1111 `.safetensors`: {"emb_params": [n, dim]};
- diffusers `.bin` / `.safetensors` (`learned_embeds`): {"<token>": [dim] or [n, dim]};
- SDXL files ({"clip_l", "clip_g"}): one set of vectors per text encoder, each put into the
  encoder of its width (an SD 1.x model, whose CLIP-L has the `clip_l` width, can use them too).
A file without vectors for each of the model's text encoders is listed as skipped, with the reason.
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
    vectors: torch.Tensor  # [n, dim], float32 (an SDXL file's `clip_l` part)
    sha256: str
    more: tuple[torch.Tensor, ...] = ()  # the vectors for other encoders ([n, dim'], SDXL's `clip_g`)

    @property
    def short_hash(self) -> str:
        return self.sha256[:TI_HASH_LEN]

    def vectors_for(self, width: int) -> torch.Tensor | None:
        """The vectors for a text encoder of this width, None if the file has none."""
        return next((v for v in (self.vectors, *self.more) if v.shape[-1] == width), None)


def _vectors_of(data: object, name: str) -> tuple[torch.Tensor, ...]:
    if isinstance(data, dict) and "clip_l" in data and "clip_g" in data:  # SDXL: one set per encoder
        parts = (_as_vectors(data["clip_l"], name), _as_vectors(data["clip_g"], name))
        if parts[0].shape[0] != parts[1].shape[0]:
            raise ValueError(f"{name}: clip_l and clip_g hold different numbers of vectors")
        return parts
    return (_single_vectors_of(data, name),)


def _single_vectors_of(data: object, name: str) -> torch.Tensor:
    if not isinstance(data, dict):
        raise ValueError(f"{name}: not an embedding (found {type(data).__name__})")
    if isinstance(data.get("string_to_param"), dict):  # A1111 .pt
        params = list(data["string_to_param"].values())
        if len(params) != 1:
            raise ValueError(f"{name}: expected one embedding in string_to_param, found {len(params)}")
        tensor = params[0]
    elif "emb_params" in data:  # A1111 .safetensors
        tensor = data["emb_params"]
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:  # diffusers learned_embeds: one "<token>" key
            raise ValueError(f"{name}: no embedding found (keys: {', '.join(map(str, list(data)[:5]))})")
        tensor = tensors[0]
    return _as_vectors(tensor, name)


def _as_vectors(tensor: object, name: str) -> torch.Tensor:
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
    first, *more = _vectors_of(data, path.name)
    return Embedding(path.stem, first, sha256_of_file(path), tuple(more))


@dataclass
class EmbeddingDatabase:
    """The embeddings of a folder that fit text encoders of widths `dims` (one for SD 1.x/2.x, two
    for SDXL: CLIP-L and OpenCLIP-G); re-scanned on `load`."""

    folder: Path
    dims: tuple[int, ...]
    embeddings: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why

    @classmethod
    def load(cls, folder: Path, dim: int | tuple[int, ...]) -> EmbeddingDatabase:
        db = cls(Path(folder), (dim,) if isinstance(dim, int) else tuple(dim))
        if not db.folder.is_dir():
            return db
        for path in sorted(p for p in db.folder.rglob("*") if p.suffix.lower() in SUFFIXES):
            try:
                embedding = load_embedding(path)
            except (ValueError, OSError, RuntimeError) as exc:
                db.skipped[path.stem] = str(exc)
                continue
            n = embedding.vectors.shape[0]
            missing = [d for d in db.dims if embedding.vectors_for(d) is None]
            if missing:
                have = ", ".join(str(v.shape[-1]) for v in (embedding.vectors, *embedding.more))
                wanted = " and ".join(map(str, db.dims))
                db.skipped[path.stem] = f"{path.name}: width {have}, this model's text encoders have {wanted}"
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
                vectors = emb.vectors_for(output.shape[-1])
                if vectors is None:  # the database only holds embeddings with every width
                    raise ValueError(f"embedding {emb.name} has no vectors for this text encoder")
                n = min(len(vectors), output.shape[1] - offset)
                output[row, offset : offset + n] = vectors[:n].to(device=output.device, dtype=output.dtype)
        return output

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
