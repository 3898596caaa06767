"""Finding checkpoints and VAEs on disk. Imports no torch/diffusers: listing must be instant.

Scanned (recursively, following symlinked folders once):
- `<root>/models/Stable-diffusion/` and, for each `--models-dir`, its `Stable-diffusion/`
  subfolder (or the folder itself when it has none), then `<root>/models/builtin/`;
- files ending in `.safetensors` / `.ckpt`, and diffusers folders (they hold model_index.json).
A folder named `<stem>/` or `<stem>.config/` beside `<stem>.safetensors` is that file's sidecar
config folder, not a model, and is not listed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from engine.models.paths import (
    BUILTIN_SUBDIR,
    CHECKPOINT_SUFFIXES,
    CHECKPOINTS_SUBDIR,
    SIDECAR_SUFFIXES,
    VAE_SUBDIR,
    VAE_SUFFIXES,
    models_root,
)
from engine.models.types import CheckpointInfo

log = logging.getLogger(__name__)


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _sub_or_self(folder: Path, sub: str) -> Path:
    return folder / sub if (folder / sub).is_dir() else folder


def checkpoint_dirs(root: Path | None = None, extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """The folders scanned for checkpoints, user folders first and the built-in model last."""
    dirs = [models_root(root) / CHECKPOINTS_SUBDIR]
    dirs += [_sub_or_self(Path(d), CHECKPOINTS_SUBDIR) for d in extra_dirs]
    dirs.append(models_root(root) / BUILTIN_SUBDIR)
    return _unique(dirs)


def vae_dirs(root: Path | None = None, extra_dirs: Sequence[Path] = ()) -> list[Path]:
    dirs = [models_root(root) / VAE_SUBDIR]
    dirs += [Path(d) / VAE_SUBDIR for d in extra_dirs if (Path(d) / VAE_SUBDIR).is_dir()]
    return _unique(dirs)


def _is_diffusers_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def _is_sidecar(folder: Path, sibling_files: set[str]) -> bool:
    """`<stem>/` or `<stem>.config/` holding model_index.json next to `<stem>.safetensors|.ckpt`.
    (A plain subfolder that merely shares a file's stem is still scanned.)"""
    if not _is_diffusers_folder(folder):
        return False
    for suffix in SIDECAR_SUFFIXES:
        if suffix and not folder.name.endswith(suffix):
            continue
        stem = folder.name[: len(folder.name) - len(suffix)] if suffix else folder.name
        if any(stem + ext in sibling_files for ext in CHECKPOINT_SUFFIXES):
            return True
    return False


def _walk(top: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk that follows symlinked folders (users link their model drives) without looping."""
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), dirnames, sorted(filenames)


def _folder_stats(folder: Path) -> tuple[int, float]:
    size, mtime = 0, folder.stat().st_mtime
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            size += st.st_size
            mtime = max(mtime, st.st_mtime)
    return size, mtime


def _name(path: Path, top: Path) -> str:
    """Stem for top-level entries, `sub/stem` for nested ones, so names in subfolders stay distinct."""
    rel = path.relative_to(top)
    stem = rel.name[: -len(path.suffix)] if path.is_file() and path.suffix else rel.name
    return (rel.parent / stem).as_posix() if rel.parent != Path(".") else stem


def scan_folder(top: Path, recursive: bool = True) -> list[CheckpointInfo]:
    if not top.is_dir():
        return []
    found: list[CheckpointInfo] = []
    for dirpath, dirnames, filenames in _walk(top):
        files = set(filenames)
        if not recursive and dirpath != top:
            dirnames[:] = []
            continue
        for d in list(dirnames):
            folder = dirpath / d
            if _is_sidecar(folder, files):
                dirnames.remove(d)
            elif _is_diffusers_folder(folder):
                dirnames.remove(d)  # its unet/, vae/ ... are parts, not models
                size, mtime = _folder_stats(folder)
                found.append(CheckpointInfo(_name(folder, top), folder, "diffusers", size, mtime))
        for f in filenames:
            path = dirpath / f
            suffix = path.suffix.lower()
            if suffix not in CHECKPOINT_SUFFIXES or f.endswith((".vae.safetensors", ".vae.ckpt")):
                continue
            try:
                st = path.stat()
            except OSError:  # a dangling symlink
                continue
            found.append(CheckpointInfo(_name(path, top), path, suffix.lstrip("."), st.st_size, st.st_mtime))
    return found


def scan_checkpoints(dirs: Sequence[Path]) -> list[CheckpointInfo]:
    """All checkpoints in `dirs`, sorted by name (case-insensitive). On a name clash the earlier
    folder wins, so a user's file shadows nothing silently: the clash is logged."""
    by_name: dict[str, CheckpointInfo] = {}
    for top in dirs:
        # models/builtin/ also ships the built-in ControlNet and upscalers in subfolders: only its
        # top level holds checkpoints.
        builtin = Path(top).name == BUILTIN_SUBDIR and Path(top).parent.name == "models"
        for info in scan_folder(Path(top), recursive=not builtin):
            if info.name in by_name:
                log.warning("checkpoint %s shadowed by %s (same name)", info.path, by_name[info.name].path)
                continue
            by_name[info.name] = info
    return sorted(by_name.values(), key=lambda i: (i.name.lower(), i.name))


def scan_vaes(dirs: Sequence[Path]) -> list[Path]:
    """VAE files (.safetensors/.ckpt/.pt) in `dirs`, sorted by file name."""
    found: dict[str, Path] = {}
    for top in dirs:
        if not Path(top).is_dir():
            continue
        for dirpath, _, filenames in _walk(Path(top)):
            for f in filenames:
                if Path(f).suffix.lower() in VAE_SUFFIXES:
                    found.setdefault(f, dirpath / f)
    return sorted(found.values(), key=lambda p: (p.name.lower(), p.name))
