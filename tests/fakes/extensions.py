"""A user extension written for a test, and an engine on the built-in model that loads it beside
the built-in ones (as a user's folder in <data dir>/extensions is loaded)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def write_extension(data_dir: Path, name: str, code: str) -> None:
    folder = data_dir / "extensions" / name
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(f'name = "{name}"\nversion = "1.0"\n')
    (folder / "main.py").write_text(code)


def engine_with_extension(data_dir: Path, name: str, code: str) -> Any:
    from engine.service.facade import Engine

    write_extension(data_dir, name, code)
    engine = Engine(data_dir=data_dir, device="cpu")
    assert {r.name: r.status for r in engine.extensions.records}[name] == "loaded"
    return engine


def extension_module(name: str) -> ModuleType:
    """The module the loader imported for extension `name` (its main.py)."""
    return sys.modules["atelier_extensions." + "".join(c if c.isalnum() else "_" for c in name).lower()]
