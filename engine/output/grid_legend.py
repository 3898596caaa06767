"""Legends around picture grids: the X/Y/Z plot's and the Prompt matrix's (A1111 look).

A legend puts one header above every column and one beside every row, wraps each text to the
room it has, and can spread the cells apart by a margin. A header may hold several labels, one
under the other; an inactive label (a prompt-matrix part left out of that row or column) is drawn
grey and struck through, so a reader sees at a glance what each picture had.

`layout_legend` computes everything (wrapped lines, paddings, output size) without drawing, so
callers and tests can read the labels; `draw_legend` draws that layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ACTIVE_COLOUR = (0, 0, 0)
INACTIVE_COLOUR = (153, 153, 153)
BACKGROUND = "white"
MIN_FONT_SIZE = 10  # small models make 64-px pictures; A1111's size/25 would be unreadable there
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass(frozen=True)
class Label:
    text: str
    active: bool = True


# A header: plain text, one label, or labels stacked top to bottom.
Header = str | Label | Sequence[Label]


@dataclass(frozen=True)
class Line:
    """One wrapped line of a header, with its measured size."""

    text: str
    active: bool
    width: int
    height: int


@dataclass(frozen=True)
class LegendLayout:
    cell_width: int
    cell_height: int
    columns: list[list[Line]]  # per column, the lines drawn above it
    rows: list[list[Line]]  # per row, the lines drawn left of it
    pad_left: int
    pad_top: int
    margin: int
    font_size: int
    line_spacing: int

    @property
    def size(self) -> tuple[int, int]:
        cols, rows = len(self.columns), len(self.rows)
        width = self.pad_left + cols * self.cell_width + self.margin * (cols - 1)
        height = self.pad_top + rows * self.cell_height + self.margin * (rows - 1)
        return width, height

    def texts(self, which: str) -> list[list[str]]:
        """The drawn lines of "columns" or "rows", as text (what tests and callers check)."""
        return [[line.text for line in header] for header in getattr(self, which)]


@functools.lru_cache(maxsize=16)
def legend_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A scalable font that needs no network: Pillow's bundled one (Pillow >= 10.1 with FreeType),
    else DejaVu Sans when the system has it, else Pillow's fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow, or built without FreeType
        pass
    try:
        return ImageFont.truetype(str(_DEJAVU), size)
    except OSError:
        return ImageFont.load_default()


def font_size_for(cell_width: int, cell_height: int) -> int:
    return max(MIN_FONT_SIZE, (cell_width + cell_height) // 25)  # A1111's proportion


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return math.ceil(right - left)


def _line_height(font) -> int:
    if hasattr(font, "getmetrics"):  # ascent + descent: the same height for every line
        return sum(font.getmetrics())
    _, top, _, bottom = font.getbbox("Ag")
    return math.ceil(bottom - top)


def wrap_text(text: str, font, max_width: int) -> list[str]:
    """Greedy word wrap to `max_width` pixels; a word wider than that is cut between letters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if _text_width(font, candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for char in word:  # the word alone may still be too wide
                if current and _text_width(font, current + char) > max_width:
                    lines.append(current)
                    current = ""
                current += char
        lines.append(current)
    return [line for line in lines if line] or [""]


def _labels(header: Header) -> list[Label]:
    if isinstance(header, str):
        return [Label(header)]
    if isinstance(header, Label):
        return [header]
    return list(header)


def _measure(header: Header, font, max_width: int) -> list[Line]:
    height = _line_height(font)
    lines = []
    for label in _labels(header):
        if not label.text.strip():
            continue
        for text in wrap_text(label.text, font, max_width):
            lines.append(Line(text, label.active, _text_width(font, text), height))
    return lines


def _block_height(lines: list[Line], spacing: int) -> int:
    return sum(line.height for line in lines) + spacing * max(0, len(lines) - 1)


def layout_legend(
    cell_width: int,
    cell_height: int,
    columns: Sequence[Header],
    rows: Sequence[Header],
    margin: int = 0,
) -> LegendLayout:
    """Where everything goes for a grid of len(columns) x len(rows) cells of the given size."""
    if not columns or not rows:
        raise ValueError("a legend needs at least one column and one row (use '' for no text)")
    if margin < 0:
        raise ValueError(f"grid margin must be >= 0, not {margin}")
    size = font_size_for(cell_width, cell_height)
    font = legend_font(size)
    spacing = size // 2
    column_lines = [_measure(h, font, max(1, cell_width - spacing)) for h in columns]
    # Row headers get A1111's three quarters of a cell, widened for tiny cells so a word fits,
    # then shrunk to the widest line so short labels do not leave a wide empty band.
    row_room = max(cell_width * 3 // 4, size * 8)
    row_lines = [_measure(h, font, row_room) for h in rows]
    widest = max((line.width for lines in row_lines for line in lines), default=0)
    pad_left = min(row_room, widest) + 2 * spacing if widest else 0
    tallest = max(_block_height(lines, spacing) for lines in column_lines)
    pad_top = tallest + 2 * spacing if tallest else 0
    return LegendLayout(
        cell_width, cell_height, column_lines, row_lines, pad_left, pad_top, margin, size, spacing
    )


def _draw_block(
    draw: ImageDraw.ImageDraw, font, centre_x: float, top: float, lines: list[Line], layout: LegendLayout
):
    y, spacing = top, layout.line_spacing
    for line in lines:
        x = centre_x - line.width / 2
        colour = ACTIVE_COLOUR if line.active else INACTIVE_COLOUR
        draw.text((x, y), line.text, font=font, fill=colour)
        if not line.active:  # strike through: "this part was left out here"
            middle = y + line.height * 0.55
            draw.line((x, middle, x + line.width, middle), fill=colour, width=max(2, layout.font_size // 10))
        y += line.height + spacing


def draw_legend(
    grid: Image.Image,
    cell_width: int,
    cell_height: int,
    columns: Sequence[Header],
    rows: Sequence[Header],
    margin: int = 0,
) -> Image.Image:
    """A new picture: `grid`'s cells spread `margin` px apart, headers above and to the left.
    With only empty headers it just adds the margins."""
    layout = layout_legend(cell_width, cell_height, columns, rows, margin)
    n_cols, n_rows = len(columns), len(rows)
    if grid.size != (n_cols * cell_width, n_rows * cell_height):
        raise ValueError(
            f"grid is {grid.width}x{grid.height}, not {n_cols}x{n_rows} cells of {cell_width}x{cell_height}"
        )
    result = Image.new("RGB", layout.size, BACKGROUND)
    for row in range(n_rows):
        for col in range(n_cols):
            box = (col * cell_width, row * cell_height, (col + 1) * cell_width, (row + 1) * cell_height)
            at = (
                layout.pad_left + col * (cell_width + margin),
                layout.pad_top + row * (cell_height + margin),
            )
            result.paste(grid.crop(box), at)
    draw = ImageDraw.Draw(result)
    font = legend_font(layout.font_size)
    for col, lines in enumerate(layout.columns):
        centre = layout.pad_left + col * (cell_width + margin) + cell_width / 2
        top = (layout.pad_top - _block_height(lines, layout.line_spacing)) / 2
        _draw_block(draw, font, centre, top, lines, layout)
    for row, lines in enumerate(layout.rows):
        top = (
            layout.pad_top
            + row * (cell_height + margin)
            + (cell_height - _block_height(lines, layout.line_spacing)) / 2
        )
        _draw_block(draw, font, layout.pad_left / 2, top, lines, layout)
    return result


def prompt_matrix_headers(parts: Sequence[str]) -> tuple[list[list[Label]], list[list[Label]]]:
    """(column headers, row headers) for the optional prompt parts of a prompt matrix.

    Picture i holds part k when bit k of i is set; the grid is filled row by row with
    2**ceil(n/2) columns, so the first half of the parts varies along the columns and the rest
    along the rows. Every header lists all parts of its half, active or struck through."""
    half = math.ceil(len(parts) / 2)
    across, down = list(parts[:half]), list(parts[half:])

    def headers(names: list[str]) -> list[list[Label]]:
        return [
            [Label(name, bool(pos & (1 << k))) for k, name in enumerate(names)]
            for pos in range(1 << len(names))
        ]

    return headers(across), headers(down)


def draw_prompt_matrix(
    grid: Image.Image, cell_width: int, cell_height: int, parts: Sequence[str], margin: int = 0
) -> Image.Image:
    columns, rows = prompt_matrix_headers(parts)
    return draw_legend(grid, cell_width, cell_height, columns, rows, margin)
