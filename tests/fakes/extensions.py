"""A user extension written for a test, and an engine on the built-in model that loads it beside
the built-in ones (as a user's folder in <data dir>/extensions is loaded)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.plugins.loader import extension_module_name


def write_extension(root: Path, name: str, code: str) -> None:
    """An extension folder `root/name` with a manifest and `code` as its main.py."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(f'name = "{name}"\nversion = "1.0"\n')
    (folder / "main.py").write_text(code)


def engine_with_extension(data_dir: Path, name: str, code: str) -> Any:
    from engine.service.facade import Engine

    write_extension(data_dir / "extensions", name, code)
    engine = Engine(data_dir=data_dir, device="cpu")
    assert {r.name: r.status for r in engine.extensions.records}[name] == "loaded"
    return engine


def extension_module(name: str) -> ModuleType:
    """The module the loader imported for extension `name` (its main.py)."""
    return sys.modules[extension_module_name(name)]
