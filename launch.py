#!/usr/bin/env python3
"""Atelier's one entry point: set up `.venv/`, then serve the UI (or run the tests) inside it.

    python3 launch.py                 # create .venv, install, start the UI on http://127.0.0.1:7860
    python3 launch.py --run-tests     # same set-up plus test extras, then the whole pytest suite

The first phase runs under whatever Python 3.11 the user has, so until it re-executes itself with
`.venv`'s interpreter this file uses the standard library only. Installs are recorded in a stamp
file inside `.venv/`; a start whose inputs (TORCH_COMMAND, requirements, Python version) did not
change never touches pip, which keeps the second start fast.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# The flags first: `engine` and `engine.cmd_args` use only the standard library (tests/unit/test_layout.py
# keeps it so), so --help and a bad flag answer before anything is installed.
from engine import cmd_args

REPO_ROOT = Path(__file__).resolve().parent
VENV_DIR = REPO_ROOT / ".venv"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
TEST_REQUIREMENTS = REPO_ROOT / "requirements-test.txt"
INSTALL_STAMP = VENV_DIR / ".atelier-install.stamp"
TEST_INSTALL_STAMP = VENV_DIR / ".atelier-test-install.stamp"

# Pinned as a pair: an unpinned torch pulls a multi-GB CUDA build, and PyPI's torchvision only
# loads beside the torch it was built for (docs/design.md, "Facts checked").
DEFAULT_TORCH_COMMAND = "pip install torch==2.14.1 torchvision==0.29.1"
# Set by the bootstrap phase just before it re-executes inside .venv, so the second phase does
# not install again (and cannot loop). Removed from the environment as soon as it is read.
BOOTSTRAPPED_ENV = "ATELIER_LAUNCH_BOOTSTRAPPED"
CHROMIUM = Path("/usr/bin/chromium")

Runner = Callable[[Sequence[str]], None]


class LaunchError(Exception):
    """A set-up step failed; the message says which step and what the user can do about it."""


def log(message: str) -> None:
    print(f"[launch] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Install stamps


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        # Length-prefix each part so ("ab", "c") and ("a", "bc") hash differently.
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def install_fingerprint(torch_command: str, requirements: bytes, python_version: str) -> str:
    """What the runtime install depends on; any change means pip must run again."""
    return _digest("runtime", torch_command, requirements, python_version)


def extras_install_fingerprint(runtime_fingerprint: str, test_requirements: bytes) -> str:
    """The test extras sit on top of the runtime install, so a runtime change re-checks them too."""
    return _digest("test", runtime_fingerprint, test_requirements)


def stamp_is_current(stamp: Path, fingerprint: str) -> bool:
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("fingerprint") == fingerprint


def write_stamp(stamp: Path, fingerprint: str, details: Mapping[str, str]) -> None:
    # Atomic, so an interrupted write can never leave a stamp that looks valid.
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(stamp.name + ".tmp")
    record = {"fingerprint": fingerprint, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **details}
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, stamp)


def ensure_installed(
    stamp: Path,
    fingerprint: str,
    commands: Sequence[Sequence[str]],
    run: Runner,
    *,
    what: str,
    details: Mapping[str, str] | None = None,
) -> bool:
    """Run `commands` unless `stamp` already records `fingerprint`. Returns whether anything ran.

    The stamp is removed before installing and written only after every command succeeded, so a
    failed or interrupted install is retried on the next start instead of being trusted.
    """
    if stamp_is_current(stamp, fingerprint):
        log(f"{what}: up to date, skipping pip")
        return False
    log(f"{what}: installing")
    stamp.unlink(missing_ok=True)
    for command in commands:
        run(command)
    write_stamp(stamp, fingerprint, details or {})
    return True


# ---------------------------------------------------------------------------------------------
# Commands


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def inside_venv(venv: Path = VENV_DIR) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def install_env(venv: Path = VENV_DIR) -> dict[str, str]:
    """Environment for install commands: the venv first on PATH, so a custom TORCH_COMMAND such
    as 'uv pip install …' or 'pip …' finds the venv's tools, and no pip self-update check."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = str(venv_python(venv).parent) + os.pathsep + env.get("PATH", "")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PYTHONHOME", None)
    return env


def make_runner(env: Mapping[str, str] | None = None) -> Runner:
    def run(command: Sequence[str]) -> None:
        shown = shlex.join(str(part) for part in command)
        log(f"running: {shown}")
        try:
            code = subprocess.call([str(part) for part in command], cwd=REPO_ROOT, env=env)
        except OSError as exc:
            raise LaunchError(f"cannot run {shown}: {exc}") from exc
        if code != 0:
            raise LaunchError(f"command failed with exit code {code}: {shown}")

    return run


def torch_install_command(torch_command: str, python: Path) -> list[str]:
    """Turn TORCH_COMMAND into an argv. As in A1111, 'pip …' runs as `<venv python> -m pip …`,
    so it installs into the venv whatever `pip` is first on the user's PATH; any other command
    (e.g. 'uv pip install …') runs as written with the venv activated."""
    try:
        tokens = shlex.split(torch_command)
    except ValueError as exc:
        raise LaunchError(f"cannot parse TORCH_COMMAND {torch_command!r}: {exc}") from exc
    if not tokens:
        raise LaunchError("TORCH_COMMAND is set but empty; unset it to use the default")
    if tokens[0] in ("pip", "pip3"):
        return [str(python), "-m", "pip", *tokens[1:]]
    return tokens


def python_version_of(python: Path) -> str:
    if inside_venv() and Path(sys.executable).resolve() == python.resolve():
        return platform.python_version()
    try:
        out = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LaunchError(
            f"{python} does not run ({exc}); the virtual environment is broken — "
            f"delete {VENV_DIR} and start again"
        ) from exc
    return out.stdout.strip()


def ensure_venv() -> Path:
    python = venv_python()
    if python.exists():
        return python
    if VENV_DIR.exists():
        raise LaunchError(f"{VENV_DIR} exists but has no {python}; delete the folder and start again")
    log(f"creating the virtual environment {VENV_DIR}")
    try:
        make_runner()([sys.executable, "-m", "venv", str(VENV_DIR)])
    except LaunchError as exc:
        # Remove the half-made folder, or every later start would trip over it.
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        raise LaunchError(
            f"{exc} (on Debian/Ubuntu the venv module comes from: apt-get install python3-venv)"
        ) from exc
    return python


def prepare_environment(with_tests: bool) -> None:
    """Create .venv and bring its packages up to date; with_tests adds the test extras + chromium."""
    python = ensure_venv()
    run = make_runner(install_env())
    torch_command = os.environ.get("TORCH_COMMAND", DEFAULT_TORCH_COMMAND)
    python_version = python_version_of(python)
    try:
        requirements = REQUIREMENTS.read_bytes()
    except OSError as exc:
        raise LaunchError(f"cannot read {REQUIREMENTS}: {exc}") from exc

    runtime = install_fingerprint(torch_command, requirements, python_version)
    ensure_installed(
        INSTALL_STAMP,
        runtime,
        [
            torch_install_command(torch_command, python),
            [str(python), "-m", "pip", "install", "-r", str(REQUIREMENTS)],
        ],
        run,
        what="requirements.txt",
        details={"torch_command": torch_command, "python": python_version},
    )
    if not with_tests:
        return
    try:
        test_requirements = TEST_REQUIREMENTS.read_bytes()
    except OSError as exc:
        raise LaunchError(f"cannot read {TEST_REQUIREMENTS}: {exc}") from exc
    ensure_installed(
        TEST_INSTALL_STAMP,
        extras_install_fingerprint(runtime, test_requirements),
        [[str(python), "-m", "pip", "install", "-r", str(TEST_REQUIREMENTS)]],
        run,
        what="requirements-test.txt",
    )
    ensure_chromium()


def ensure_chromium(run: Runner | None = None) -> None:
    """Browser tests drive Debian's chromium through Playwright; without it they skip, not fail."""
    if CHROMIUM.exists():
        return
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not is_root or shutil.which("apt-get") is None:
        log(
            f"notice: {CHROMIUM} is missing and cannot be installed here (needs root and apt-get), "
            "so the browser tests in tests/e2e will be skipped. To run them: "
            "sudo apt-get install -y --no-install-recommends chromium"
        )
        return
    run = run or make_runner(dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    # The emoji font draws the 🎲 ♻️ 🔄 buttons in screenshots (otherwise empty boxes).
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-noto-color-emoji"]
    try:
        run(install)
        return
    except LaunchError:
        # Usually stale package lists on a fresh image; `apt-get update` only when needed (slow).
        log("apt-get install failed; refreshing package lists and retrying")
    try:
        run(["apt-get", "update"])
        run(install)
    except LaunchError as exc:
        log(f"notice: could not install chromium ({exc}); the browser tests in tests/e2e will be skipped")


# ---------------------------------------------------------------------------------------------
# Phase two: inside the venv


def reexec_in_venv(python: Path, argv: Sequence[str]) -> None:
    os.environ[BOOTSTRAPPED_ENV] = "1"
    command = [str(python), str(REPO_ROOT / "launch.py"), *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":  # os.execv on Windows does not replace the process; wait for the child instead.
        sys.exit(subprocess.call(command))
    os.execv(command[0], command)


def run_tests(pytest_args: Sequence[str]) -> int:
    # Tests must never reach a model hub (none is reachable, and a hang is worse than a failure).
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    command = [sys.executable, "-m", "pytest", *pytest_args]
    log(f"running: {shlex.join(command)}")
    code = subprocess.call(command, cwd=REPO_ROOT, env=env)
    log(f"pytest exited with code {code}")
    return code


def serve(args: argparse.Namespace) -> int:
    # Atelier runs offline: weights come from local folders, and Gradio must not phone home.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        # Imported only now: it pulls in torch, diffusers and gradio (seconds), which --help and
        # the install phase must not pay for.
        from ui.server import serve as serve_app
    except ModuleNotFoundError as exc:
        if exc.name in ("ui", "ui.server"):
            missing = REPO_ROOT / "ui" / "server.py"
            raise LaunchError(f"{missing} is missing; is the checkout complete?") from exc
        if (exc.name or "").split(".")[0] in ("ui", "api", "engine", "extensions"):
            raise  # a bug in our own code: the traceback is the useful message
        raise LaunchError(
            f"the Python package {exc.name!r} is not installed in {sys.prefix}; "
            "run `python3 launch.py` without --skip-install to install the dependencies"
        ) from exc
    try:
        serve_app(args)
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = cmd_args.parse_args(argv)  # --help and bad flags exit here, before any set-up
    bootstrapped = os.environ.pop(BOOTSTRAPPED_ENV, None) == "1"
    if sys.version_info[:2] != (3, 11):
        log(f"warning: Atelier is pinned and tested on Python 3.11; this is {platform.python_version()}")
    try:
        if not (args.skip_install or bootstrapped):
            prepare_environment(with_tests=args.run_tests is not None)
        if not inside_venv():
            if venv_python().exists():
                reexec_in_venv(venv_python(), argv)
            log(f"no {VENV_DIR}; --skip-install runs in the current interpreter {sys.executable}")
        if args.run_tests is not None:
            return run_tests(args.run_tests)
        return serve(args)
    except LaunchError as exc:
        print(f"[launch] error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
