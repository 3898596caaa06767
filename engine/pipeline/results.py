"""What a generation job returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.schema.params import GenerationParams


@dataclass
class GenerationResult:
    params: GenerationParams  # the request with its seed resolved (never -1)
    images: list[Any] = field(default_factory=list)  # PIL images, in seed order
    infotexts: list[str] = field(default_factory=list)  # one A1111 'parameters' text per image
    seeds: list[int] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)  # None when saving is off
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. "VAE decode fell back to fp32 (NaN)"
