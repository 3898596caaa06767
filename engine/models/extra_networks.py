"""What the "Extra networks" panel lists: LoRA files and textual-inversion embeddings, each with
its preview image when one sits beside it, and the prompt text a click inserts (or removes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.conditioning.embeddings import SUFFIXES as EMBEDDING_SUFFIXES
from engine.models.lora import LORA_SUFFIXES

# A1111 looks for these beside the file: my-style.png, my-style.preview.png, ...
PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".jpeg", ".webp", ".preview.jpg", ".preview.webp")
KINDS = ("lora", "embedding")


@dataclass(frozen=True)
class NetworkCard:
    kind: str  # "lora" or "embedding"
    name: str
    path: Path
    preview: Path | None

    @property
    def tag(self) -> str:
        """What goes into the prompt: `<lora:name:1>` for a LoRA, the file name for an embedding."""
        return f"<lora:{self.name}:1>" if self.kind == "lora" else self.name


def _preview(path: Path) -> Path | None:
    for suffix in PREVIEW_SUFFIXES:
        candidate = path.with_name(path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _cards(kind: str, folder: Path, suffixes: tuple[str, ...]) -> list[NetworkCard]:
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    return [NetworkCard(kind, p.stem, p, _preview(p)) for p in files]


def list_cards(lora_dir: Path, embeddings_dir: Path) -> list[NetworkCard]:
    return _cards("lora", lora_dir, LORA_SUFFIXES) + _cards("embedding", embeddings_dir, EMBEDDING_SUFFIXES)


def toggle_tag(prompt: str, tag: str) -> str:
    """A1111's card click: remove the tag when the prompt has it (a LoRA tag at any strength),
    otherwise append it after a space."""
    if tag.startswith("<lora:"):
        name = tag[len("<lora:") :].split(":")[0]
        pattern = re.compile(r"\s*<lora:" + re.escape(name) + r"(?::[^>]*)?>")
        if pattern.search(prompt):
            return pattern.sub("", prompt, count=1).strip()
    else:
        words = prompt.split(" ")
        if tag in words:
            words.remove(tag)
            return " ".join(words).strip()
    return f"{prompt.rstrip()} {tag}".strip()
