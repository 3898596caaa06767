"""Installing an extension from a git URL or a local folder (the Extensions tab's "Install").

Only offered when the UI is reachable from this machine alone, unless the user says otherwise
(`--enable-insecure-extension-access`, A1111's rule): installing runs foreign code. The
extension's Python requirements are installed here, into the project's environment, once —
never while generating. Nothing already installed is overwritten: a name that exists is refused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.plugins.loader import ExtensionManager, ExtensionRecord, read_manifest, unmet_requirements

INSECURE_MESSAGE = (
    "Installing extensions is disabled because the UI is reachable from the network (--listen). "
    "Restart with --enable-insecure-extension-access to allow it."
)
_URL_RE = re.compile(r"^(https?|git|ssh|file)://|^git@[\w.-]+:")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
GIT_TIMEOUT_S = 300
PIP_TIMEOUT_S = 1800


def install_extension(
    manager: ExtensionManager, source: str, target_root: Path, *, allowed: bool, folder_name: str = ""
) -> ExtensionRecord:
    """Fetch `source` (git URL or local folder) into `target_root/<name>`, install its
    requirements and load it. ValueError with a clear message for every refusal."""
    if not allowed:
        raise ValueError(INSECURE_MESSAGE)
    source = (source or "").strip()
    if not source:
        raise ValueError("give a git URL or a local folder to install from")
    name = folder_name.strip() or _default_name(source)
    if not _NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a usable folder name")
    target = Path(target_root) / name
    if target.exists():
        raise ValueError(f"extensions/{name} already exists: remove it first or choose another folder name")
    target_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_root, prefix=".install-") as tmp:
        staged = Path(tmp) / name
        _fetch(source, staged)
        manifest = read_manifest(staged)
        if any(r.name == manifest.name for r in manager.records):
            raise ValueError(f"an extension named {manifest.name!r} is already installed")
        _install_requirements(unmet_requirements(manifest.requirements))
        staged.rename(target)  # same filesystem: atomic, so a failed install leaves nothing behind
    return manager.load_one(target, manifest, None, set())


def _default_name(source: str) -> str:
    tail = source.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git") or "extension"


def _fetch(source: str, destination: Path) -> None:
    if _URL_RE.match(source):
        try:
            done = subprocess.run(
                ["git", "clone", "--depth", "1", "--", source, str(destination)],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError(f"git clone failed: {exc}") from exc
        if done.returncode != 0:
            raise ValueError(f"git clone failed: {done.stderr.strip()[-500:]}")
        return
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ValueError(f"not a git URL or an existing folder: {source}")
    shutil.copytree(folder, destination, ignore=shutil.ignore_patterns(".git", "__pycache__"))


def _install_requirements(requirements: list[str]) -> None:
    """pip install what the environment lacks (nothing to do when every requirement is met)."""
    if not requirements:
        return
    specs = [r.split(" (installed:")[0] for r in requirements]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", *specs],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"installing the requirements failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise ValueError(f"installing the requirements {', '.join(specs)} failed: {tail}")
