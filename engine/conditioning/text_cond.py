"""What a text gives the UNet: the token sequence and, in families that take one, a pooled vector.

SD 1.x/2.x use the hidden states alone; SDXL also takes the OpenCLIP-G projection of the end token
(`pooled`). Both travel together through prompt schedules, the CFG batch and ControlNet, so one
type carries them and no stage needs to know which family it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextCond:
    hidden: torch.Tensor  # [rows, tokens, width]
    pooled: torch.Tensor | None = None  # [rows, pooled width]

    @classmethod
    def of(cls, value: TextCond | torch.Tensor) -> TextCond:
        """A bare hidden-state tensor (SD 1.x/2.x callers and tests) as a TextCond."""
        return value if isinstance(value, TextCond) else cls(value)

    @property
    def shape(self) -> torch.Size:
        return self.hidden.shape

    def expand(self, rows: int) -> TextCond:
        pooled = None if self.pooled is None else self.pooled.expand(rows, -1)
        return TextCond(self.hidden.expand(rows, -1, -1), pooled)

    def to(self, *args, **kwargs) -> TextCond:
        pooled = None if self.pooled is None else self.pooled.to(*args, **kwargs)
        return TextCond(self.hidden.to(*args, **kwargs), pooled)

    def zeros_like(self) -> TextCond:
        pooled = None if self.pooled is None else torch.zeros_like(self.pooled)
        return TextCond(torch.zeros_like(self.hidden), pooled)

    @staticmethod
    def cat(items: Sequence[TextCond | torch.Tensor]) -> TextCond:
        conds = [TextCond.of(c) for c in items]
        pooled = None if conds[0].pooled is None else torch.cat([c.pooled for c in conds])
        return TextCond(torch.cat([c.hidden for c in conds]), pooled)
