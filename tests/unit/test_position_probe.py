"""The position probe swaps exactly the position phrase, and never to the same place."""

from __future__ import annotations

import numpy as np
import pytest

from tools.position_probe import swap_position
from world.scenes import parse_caption, random_scene


def test_swap_changes_only_the_position():
    rng = np.random.default_rng(0)
    scenes_rng = np.random.default_rng(1)
    for _ in range(200):
        caption = random_scene(scenes_rng).caption
        before, after = parse_caption(caption), parse_caption(swap_position(caption, rng))
        assert after.position != before.position
        assert (after.shape, after.colour, after.size, after.background) == (
            before.shape, before.colour, before.size, before.background,
        )  # fmt: skip


def test_swap_needs_a_position_phrase():
    with pytest.raises(ValueError, match="no position phrase"):
        swap_position("a red circle", np.random.default_rng(0))
