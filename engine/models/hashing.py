"""A1111's "Model hash": the first 10 hex digits of the checkpoint file's SHA-256.

Hashing a multi-GB file takes seconds, so full digests are cached in `cache/hashes.json`, keyed
by the resolved path and invalidated when the file's mtime or size changes.

A diffusers folder has no single file, so its hash is defined here as the SHA-256 of the
concatenated hex digests of its weight files (`*.safetensors`, `*.bin`, `*.ckpt`, `*.pt`),
taken in sorted relative-path order. It is stable across copies of the folder, but it does not
match any hash A1111 would show (A1111 cannot load such folders).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

SHORT_HASH_LEN = 10
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")
_CHUNK = 1 << 20
_CACHE_VERSION = 1


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(sha256: str) -> str:
    return sha256[:SHORT_HASH_LEN]


class HashCache:
    """Full SHA-256 digests of files, persisted as JSON. Thread-safe; one instance per cache file."""

    def __init__(self, path: Path | None):
        self.path = path  # None: in-memory only (tests, read-only installs)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}  # a broken cache only costs re-hashing
        if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def _write(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hashes-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": _CACHE_VERSION, "files": self._entries}, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:
            pass  # not being able to persist the cache is not worth failing a load for

    def file_sha256(self, path: Path) -> str:
        """SHA-256 of one file, read from the cache when path, mtime and size still match."""
        path = Path(path).resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry.get("mtime") == stat.st_mtime and entry.get("size") == stat.st_size:
                return str(entry["sha256"])
        digest = sha256_of_file(path)  # outside the lock: hashing may take seconds
        with self._lock:
            self._entries[key] = {"mtime": stat.st_mtime, "size": stat.st_size, "sha256": digest}
            self._write()
        return digest

    def is_cached(self, path: Path) -> bool:
        """True when `file_sha256(path)` would answer without reading the file."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError:
            return False
        with self._lock:
            entry = self._entries.get(str(path))
        return bool(entry and entry.get("mtime") == stat.st_mtime and entry.get("size") == stat.st_size)

    def checkpoint_sha256(self, path: Path) -> str:
        """SHA-256 of a checkpoint file, or of a diffusers folder as defined in the module doc."""
        path = Path(path)
        if path.is_file():
            return self.file_sha256(path)
        weights = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not weights:
            raise ValueError(f"{path.name}: no weight files to hash")
        joined = "".join(self.file_sha256(p) for p in weights)
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    def short_hash(self, path: Path) -> str:
        return short_hash(self.checkpoint_sha256(path))
