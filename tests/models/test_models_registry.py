"""Scanning model folders and A1111-style hashes. Uses small fake files: the registry never
opens weights, so these tests need no model at all."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from engine.models import hashing
from engine.models.hashing import HashCache
from engine.models.registry import checkpoint_dirs, scan_checkpoints, scan_vaes, vae_dirs


def _touch(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _diffusers_folder(folder: Path) -> Path:
    _touch(folder / "model_index.json", b"{}")
    _touch(folder / "unet" / "diffusion_pytorch_model.safetensors", b"unet")
    _touch(folder / "vae" / "diffusion_pytorch_model.safetensors", b"vae")
    return folder


def test_empty_and_missing_folders(app_root: Path) -> None:
    assert scan_checkpoints(checkpoint_dirs(app_root)) == []
    assert scan_checkpoints([app_root / "does-not-exist"]) == []
    assert scan_vaes(vae_dirs(app_root)) == []


def test_scan_finds_files_folders_and_skips_sidecars(app_root: Path) -> None:
    sd = app_root / "models" / "Stable-diffusion"
    _touch(sd / "beta.safetensors")
    _touch(sd / "Alpha.ckpt")
    _touch(sd / "sub" / "nested.safetensors")
    _touch(sd / "notes.txt")
    _touch(sd / "beta.vae.safetensors")  # a VAE beside its checkpoint, not a checkpoint
    _diffusers_folder(sd / "diffusers-model")
    _touch(sd / "beta.config" / "model_index.json", b"{}")  # sidecar of beta.safetensors
    _touch(sd / "Alpha" / "model_index.json", b"{}")  # sidecar named like the stem
    _touch(sd / ".hidden" / "x.safetensors")
    infos = scan_checkpoints(checkpoint_dirs(app_root))
    assert [(i.name, i.format) for i in infos] == [
        ("Alpha", "ckpt"),
        ("beta", "safetensors"),
        ("diffusers-model", "diffusers"),
        ("sub/nested", "safetensors"),
    ]
    beta = infos[1]
    assert beta.title == "beta" and beta.size_bytes == len(b"weights")
    assert beta.path == sd / "beta.safetensors" and beta.mtime == os.stat(beta.path).st_mtime
    assert infos[2].size_bytes == len(b"{}unetvae")


def test_plain_subfolder_named_like_a_file_is_still_scanned(app_root: Path) -> None:
    sd = app_root / "models" / "Stable-diffusion"
    _touch(sd / "anime.safetensors")
    _touch(sd / "anime" / "other.safetensors")  # a folder of models, not a sidecar
    assert [i.name for i in scan_checkpoints([sd])] == ["anime", "anime/other"]


def test_models_dir_flag_and_builtin(app_root: Path, tmp_path: Path) -> None:
    with_sub = tmp_path / "elsewhere"
    _touch(with_sub / "Stable-diffusion" / "one.safetensors")
    _touch(with_sub / "ignored-outside-subfolder.safetensors")
    flat = tmp_path / "flat"
    _touch(flat / "two.ckpt")
    _touch(app_root / "models" / "builtin" / "atelier-tiny.safetensors")
    dirs = checkpoint_dirs(app_root, [with_sub, flat, app_root / "models"])
    assert dirs[-1] == app_root / "models" / "builtin"
    assert len(dirs) == 4  # models/ resolves to the same Stable-diffusion folder: scanned once
    assert [i.name for i in scan_checkpoints(dirs)] == ["atelier-tiny", "one", "two"]


def test_name_clash_first_folder_wins(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "same.safetensors")
    _touch(tmp_path / "b" / "same.safetensors")
    infos = scan_checkpoints([tmp_path / "a", tmp_path / "b"])
    assert [i.path for i in infos] == [tmp_path / "a" / "same.safetensors"]


def test_vae_scan(app_root: Path) -> None:
    vae = app_root / "models" / "VAE"
    for name in ("b.safetensors", "a.pt", "c.ckpt", "readme.txt"):
        _touch(vae / name)
    assert [p.name for p in scan_vaes(vae_dirs(app_root))] == ["a.pt", "b.safetensors", "c.ckpt"]


def test_short_hash_is_sha256_prefix_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    model = _touch(tmp_path / "m.safetensors", data)
    cache_file = tmp_path / "cache" / "hashes.json"
    reads: list[Path] = []
    real = hashing.sha256_of_file
    monkeypatch.setattr(hashing, "sha256_of_file", lambda p: reads.append(p) or real(p))

    cache = HashCache(cache_file)
    assert cache.short_hash(model) == hashlib.sha256(data).hexdigest()[:10]
    assert len(reads) == 1
    assert cache.is_cached(model)
    cache.short_hash(model)
    HashCache(cache_file).short_hash(model)  # a new process reads the JSON, not the file
    assert len(reads) == 1
    entry = json.loads(cache_file.read_text())["files"][str(model.resolve())]
    assert entry["size"] == len(data)

    model.write_bytes(b"changed")  # new size and mtime: the old digest must not be reused
    assert cache.short_hash(model) == hashlib.sha256(b"changed").hexdigest()[:10]
    assert len(reads) == 2


def test_diffusers_folder_hash_definition(tmp_path: Path) -> None:
    folder = _diffusers_folder(tmp_path / "d")
    parts = [hashlib.sha256(b"unet").hexdigest(), hashlib.sha256(b"vae").hexdigest()]  # unet/ < vae/
    expected = hashlib.sha256("".join(parts).encode()).hexdigest()
    assert HashCache(None).checkpoint_sha256(folder) == expected


def test_broken_hash_cache_is_ignored(tmp_path: Path) -> None:
    cache_file = _touch(tmp_path / "hashes.json", b"{not json")
    model = _touch(tmp_path / "m.ckpt", b"abc")
    assert HashCache(cache_file).short_hash(model) == hashlib.sha256(b"abc").hexdigest()[:10]
