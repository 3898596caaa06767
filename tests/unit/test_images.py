"""Saving images atomically with A1111 numbering, and grids."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from engine.output.images import SaveError, grid_rows, image_grid, next_sequence_number, save_image
from engine.schema.infotext import read_png_parameters


def _image(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (16, 16)) -> Image.Image:
    return Image.new("RGB", size, color)


def _day(outdir: Path) -> Path:
    return outdir / date.today().isoformat()


def test_first_image_layout_and_parameters(tmp_path: Path) -> None:
    text = "a cat, ünïcode 🐱\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 42"
    path = save_image(_image(), tmp_path, seed=42, infotext=text)
    assert path == _day(tmp_path) / "00000-42.png"
    assert read_png_parameters(path) == text
    with Image.open(path) as saved:
        assert saved.size == (16, 16) and saved.getpixel((0, 0)) == (255, 0, 0)


def test_numbering_continues_from_existing_files(tmp_path: Path) -> None:
    day = _day(tmp_path)
    day.mkdir(parents=True)
    for name in ("00003-1.png", "00011-5-suffix.png", "grid-0099.png", "notes.txt", "00007"):
        (day / name).write_bytes(b"old")
    path = save_image(_image(), tmp_path, seed=9, infotext="p", basename_suffix="-hires")
    assert path.name == "00012-9-hires.png"
    assert next_sequence_number(day) == 13
    assert next_sequence_number(tmp_path / "missing") == 0


def test_never_overwrites_a_taken_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    day = _day(tmp_path)
    day.mkdir(parents=True)
    (day / "00004-1.png").write_bytes(b"x")
    # Another writer takes number 5 between our scan and our link: simulate by a stale scan.
    taken = day / "00005-7.png"
    taken.write_bytes(b"precious old bytes")
    monkeypatch.setattr("engine.output.images.next_sequence_number", lambda folder: 5)
    path = save_image(_image(), tmp_path, seed=7, infotext="p")
    assert path.name == "00006-7.png"
    assert taken.read_bytes() == b"precious old bytes"


def test_concurrent_saves_give_distinct_files(tmp_path: Path) -> None:
    per_thread, threads = 5, 4
    results: list[Path] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for k in range(per_thread):
                color = (index * 60, k * 40, 7)
                path = save_image(_image(color), tmp_path, seed=1, infotext=f"t{index}-{k}")
                with lock:
                    results.append(path)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not errors
    assert len(set(results)) == per_thread * threads
    # Every file holds the image and text of exactly one save: none lost or overwritten.
    texts = {read_png_parameters(p) for p in results}
    assert texts == {f"t{i}-{k}" for i in range(threads) for k in range(per_thread)}
    names = sorted(p.name for p in _day(tmp_path).iterdir())
    assert names == [f"{n:05d}-1.png" for n in range(per_thread * threads)]


def test_no_temp_files_left_behind_even_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_image(_image(), tmp_path, seed=1, infotext="p")

    def broken_link(src: object, dst: object) -> None:
        raise PermissionError("no links and no exclusive create here")

    monkeypatch.setattr("engine.output.images.os.link", broken_link)
    monkeypatch.setattr("engine.output.images.os.replace", broken_link)
    with pytest.raises(SaveError) as failed:  # the clear error, caused by the permission error
        save_image(_image(), tmp_path, seed=2, infotext="p")
    assert isinstance(failed.value.__cause__, PermissionError)
    assert "no links and no exclusive create here" in str(failed.value)
    # Neither the temp file nor an empty name reservation survives the failed save.
    assert [p.name for p in _day(tmp_path).iterdir()] == ["00000-1.png"]


def test_fallback_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr("engine.output.images.os.link", no_links)
    first = save_image(_image(), tmp_path, seed=1, infotext="one")
    second = save_image(_image(), tmp_path, seed=1, infotext="two")
    assert (first.name, second.name) == ("00000-1.png", "00001-1.png")
    assert read_png_parameters(first) == "one" and read_png_parameters(second) == "two"
    assert sorted(p.name for p in _day(tmp_path).iterdir()) == ["00000-1.png", "00001-1.png"]


def test_unsafe_suffix_cannot_escape_the_folder(tmp_path: Path) -> None:
    path = save_image(_image(), tmp_path, seed=3, infotext="p", basename_suffix="/../../evil")
    assert path.parent == _day(tmp_path)
    assert path.name == "00000-3_.._.._evil.png"


@pytest.mark.parametrize(("count", "rows"), [(1, 1), (2, 1), (4, 2), (5, 1), (6, 2), (8, 2), (9, 3), (12, 3)])
def test_grid_rows_like_a1111(count: int, rows: int) -> None:
    assert grid_rows(count) == rows


def test_image_grid_layout() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = image_grid([_image(c, (10, 20)) for c in colors])
    assert grid.size == (20, 40)
    assert [grid.getpixel(xy) for xy in [(5, 5), (15, 5), (5, 25), (15, 25)]] == colors
    wide = image_grid([_image(c, (10, 20)) for c in colors[:3]], rows=2)
    assert wide.size == (20, 40) and wide.getpixel((15, 25)) == (0, 0, 0)
    assert image_grid([_image(c) for c in colors], rows=10).size == (16, 64)
    with pytest.raises(ValueError):
        image_grid([])
