"""Grid legends (engine.output.grid_legend): font, wrapping, layout sizes, where cells and texts land,
inactive labels grey and struck through, and the prompt-matrix headers."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.output.grid_legend import (
    INACTIVE_COLOUR,
    Label,
    draw_legend,
    draw_prompt_matrix,
    font_size_for,
    layout_legend,
    legend_font,
    prompt_matrix_headers,
    wrap_text,
)

CELL_W, CELL_H = 96, 64
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def coloured_grid(cols: int, rows: int) -> Image.Image:
    grid = Image.new("RGB", (cols * CELL_W, rows * CELL_H))
    for i in range(cols * rows):
        grid.paste(
            COLOURS[i % len(COLOURS)],
            ((i % cols) * CELL_W, (i // cols) * CELL_H, (i % cols + 1) * CELL_W, (i // cols + 1) * CELL_H),
        )
    return grid


def colours_in(image: Image.Image) -> set[tuple[int, int, int]]:
    return {colour for _, colour in image.getcolors(maxcolors=1 << 16)}


def has_dark_text(image: Image.Image) -> bool:
    """Black text, anti-aliased: some pixels near black (grey text never gets there)."""
    return any(max(colour) < 90 for colour in colours_in(image))


def test_the_font_is_scalable_and_offline():
    small, large = legend_font(10), legend_font(40)
    assert large.getbbox("Steps: 20")[2] > 2 * small.getbbox("Steps: 20")[2]
    assert font_size_for(512, 512) == 40 and font_size_for(64, 64) == 10  # A1111's size/25, readable minimum


def test_wrap_text_fits_the_width_and_cuts_long_words():
    font = legend_font(12)
    lines = wrap_text("a fairly long label that cannot fit on one line", font, 60)
    assert len(lines) > 2 and all(font.getbbox(line)[2] - font.getbbox(line)[0] <= 60 for line in lines)
    assert " ".join(lines) == "a fairly long label that cannot fit on one line"
    cut = wrap_text("supercalifragilisticexpialidocious", font, 40)
    assert len(cut) > 1 and "".join(cut) == "supercalifragilisticexpialidocious"
    assert wrap_text("", font, 40) == [""]


def test_layout_without_texts_only_adds_margins():
    layout = layout_legend(CELL_W, CELL_H, ["", ""], ["", "", ""], margin=6)
    assert (layout.pad_left, layout.pad_top) == (0, 0)
    assert layout.size == (2 * CELL_W + 6, 3 * CELL_H + 12)


def test_layout_texts_and_paddings():
    layout = layout_legend(CELL_W, CELL_H, ["Steps: 10", "Steps: 20"], ["Euler a", "DDIM"])
    assert layout.texts("columns") == [["Steps: 10"], ["Steps: 20"]]
    assert layout.texts("rows") == [["Euler a"], ["DDIM"]]
    assert layout.pad_top > layout.font_size and layout.pad_left > 0
    only_columns = layout_legend(CELL_W, CELL_H, ["Steps: 10"], [""])
    assert only_columns.pad_left == 0 and only_columns.pad_top == layout.pad_top
    wrapped = layout_legend(CELL_W, CELL_H, ["Prompt: a very long prompt about a cat in a hat"], [""])
    assert len(wrapped.texts("columns")[0]) > 1 and wrapped.pad_top > layout.pad_top


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one column"):
        layout_legend(CELL_W, CELL_H, [], [""])
    with pytest.raises(ValueError, match="margin"):
        layout_legend(CELL_W, CELL_H, [""], [""], margin=-2)
    with pytest.raises(ValueError, match="not 3x1 cells"):
        draw_legend(coloured_grid(2, 1), CELL_W, CELL_H, ["a", "b", "c"], [""])


def test_cells_land_after_the_legend_and_margins_and_texts_are_drawn():
    margin = 8
    grid = coloured_grid(3, 2)
    result = draw_legend(grid, CELL_W, CELL_H, ["A", "B", "C"], ["one", "two"], margin)
    layout = layout_legend(CELL_W, CELL_H, ["A", "B", "C"], ["one", "two"], margin)
    assert result.size == layout.size
    for i in range(6):
        col, row = i % 3, i // 3
        x = layout.pad_left + col * (CELL_W + margin) + CELL_W // 2
        y = layout.pad_top + row * (CELL_H + margin) + CELL_H // 2
        assert result.getpixel((x, y)) == COLOURS[i]
    assert result.getpixel((layout.pad_left + CELL_W + margin // 2, layout.pad_top + 5)) == (255, 255, 255)
    header = result.crop((layout.pad_left, 0, result.width, layout.pad_top))
    side = result.crop((0, layout.pad_top, layout.pad_left, result.height))
    assert has_dark_text(header) and has_dark_text(side)


def test_inactive_labels_are_grey_and_struck_through():
    grid = coloured_grid(1, 1)
    inactive = draw_legend(grid, CELL_W, CELL_H, [[Label("red", active=False)]], [""])
    layout = layout_legend(CELL_W, CELL_H, [[Label("red", active=False)]], [""])
    header = inactive.crop((0, 0, inactive.width, layout.pad_top))
    assert INACTIVE_COLOUR in colours_in(header) and not has_dark_text(header)
    line = layout.columns[0][0]
    # the strike: one row of the header is grey across the whole text width
    left = round(CELL_W / 2 - line.width / 2)
    rows = [
        y
        for y in range(layout.pad_top)
        if all(header.getpixel((x, y)) == INACTIVE_COLOUR for x in range(left + 1, left + line.width - 1))
    ]
    assert rows
    active = draw_legend(grid, CELL_W, CELL_H, [[Label("red")]], [""])
    assert has_dark_text(active.crop((0, 0, active.width, layout.pad_top)))


def test_prompt_matrix_headers_split_the_parts_between_columns_and_rows():
    columns, rows = prompt_matrix_headers(["red", "hat", "night"])
    assert len(columns) == 4 and len(rows) == 2  # 2 parts across, 1 down
    assert [[(label.text, label.active) for label in header] for header in columns] == [
        [("red", False), ("hat", False)],
        [("red", True), ("hat", False)],
        [("red", False), ("hat", True)],
        [("red", True), ("hat", True)],
    ]
    assert [[(label.text, label.active) for label in header] for header in rows] == [
        [("night", False)],
        [("night", True)],
    ]
    result = draw_prompt_matrix(coloured_grid(4, 2), CELL_W, CELL_H, ["red", "hat", "night"], margin=4)
    assert result.size == layout_legend(CELL_W, CELL_H, columns, rows, 4).size
    assert prompt_matrix_headers(["only"]) == ([[Label("only", False)], [Label("only", True)]], [[]])
