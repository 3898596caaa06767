"""launch.py and engine/cmd_args.py: flags, install stamps, and the bootstrap run end to end.

Nothing here installs real packages: the stamp logic is tested with a recording runner, and the
end-to-end bootstrap runs in a throw-away copy of the launcher whose requirements are satisfied
by a fresh venv already (pip itself), so it needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import launch
from engine.cmd_args import DEFAULT_PORT, parse_args

REPO = Path(__file__).resolve().parents[2]
ALL_FLAGS = (
    "--listen",
    "--port",
    "--models-dir",
    "--outdir",
    "--device",
    "--precision",
    "--no-half-vae",
    "--skip-install",
    "--autolaunch",
    "--run-tests",
    "--data-dir",
)


# --- --help ----------------------------------------------------------------------------------


def test_help_is_instant_stdlib_only_and_lists_every_flag() -> None:
    # -S drops site-packages: if launch.py or cmd_args imported anything beyond the standard
    # library before parsing, --help would fail here, as it would on a fresh machine.
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-S", str(REPO / "launch.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    assert elapsed < 3.0, f"--help took {elapsed:.2f} s"
    for flag in ALL_FLAGS:
        assert flag in done.stdout, f"{flag} missing from --help"
    assert "TORCH_COMMAND" in done.stdout
    assert "pip" not in done.stderr  # parsing alone must never start an install


# --- the parser --------------------------------------------------------------------------------


def test_defaults() -> None:
    args = parse_args([])
    assert args.port == DEFAULT_PORT == 7860
    assert args.host == "127.0.0.1"
    assert (args.device, args.precision) == ("auto", "auto")
    assert not (args.listen or args.no_half_vae or args.skip_install or args.autolaunch)
    assert args.run_tests is None
    assert args.data_dir == REPO
    assert args.config_file == REPO / "config.json"
    assert args.cache_dir == REPO / "cache"
    assert args.models_dir is None and args.outdir is None


def test_values_are_parsed_and_paths_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = parse_args(
        ["--listen", "--port", "9000", "--device", "cpu", "--precision", "bf16", "--no-half-vae"]
        + ["--data-dir", "data", "--models-dir", "m", "--outdir", "out", "--autolaunch", "--skip-install"]
    )
    assert args.host == "0.0.0.0" and args.port == 9000
    assert (args.device, args.precision, args.no_half_vae) == ("cpu", "bf16", True)
    assert args.data_dir == tmp_path / "data"
    assert args.models_dir == tmp_path / "m"
    assert args.outdir == tmp_path / "out"
    assert args.config_file == tmp_path / "data" / "config.json"
    assert args.autolaunch and args.skip_install


@pytest.mark.parametrize(
    "argv",
    [
        ["--device", "tpu"],
        ["--precision", "fp8"],
        ["--port", "70000"],
        ["--port", "0"],
        ["--port", "http"],
        ["--no-such-flag"],
    ],
)
def test_bad_values_are_rejected(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "pytest_args"),
    [
        (["--run-tests"], []),
        (["--run-tests", "-x", "-k", "sampler"], ["-x", "-k", "sampler"]),
        (["--run-tests", "--", "-q"], ["-q"]),
        # Flags after --run-tests belong to pytest, even ones that look like ours.
        (
            ["--port", "9000", "--run-tests", "tests/unit/test_launch.py", "--port", "1"],
            ["tests/unit/test_launch.py", "--port", "1"],
        ),
    ],
)
def test_run_tests_hands_the_rest_to_pytest(argv: list[str], pytest_args: list[str]) -> None:
    args = parse_args(argv)
    assert args.run_tests == pytest_args
    assert args.port == (9000 if "9000" in argv else DEFAULT_PORT)


# --- install stamps --------------------------------------------------------------------------


class RecordingRunner:
    def __init__(self, fail_on: str | None = None) -> None:
        self.commands: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, command: Sequence[str]) -> None:
        self.commands.append(list(command))
        if self.fail_on and self.fail_on in command:
            raise launch.LaunchError(f"command failed with exit code 1: {' '.join(command)}")


COMMANDS = [["python", "-m", "pip", "install", "torch"], ["python", "-m", "pip", "install", "-r", "req.txt"]]


def test_fingerprint_changes_with_every_input() -> None:
    base = launch.install_fingerprint("pip install torch", b"gradio==6\n", "3.11.7")
    assert base == launch.install_fingerprint("pip install torch", b"gradio==6\n", "3.11.7")
    assert base != launch.install_fingerprint("pip install torch==2", b"gradio==6\n", "3.11.7")
    assert base != launch.install_fingerprint("pip install torch", b"gradio==7\n", "3.11.7")
    assert base != launch.install_fingerprint("pip install torch", b"gradio==6\n", "3.11.9")
    extras = launch.extras_install_fingerprint(base, b"pytest\n")
    assert extras != launch.extras_install_fingerprint(base, b"pytest==9\n")
    other = launch.install_fingerprint("pip install torch", b"gradio==7\n", "3.11.7")
    assert extras != launch.extras_install_fingerprint(other, b"pytest\n")


def test_same_inputs_skip_pip_and_changed_requirements_reinstall(tmp_path: Path) -> None:
    stamp = tmp_path / ".venv" / "stamp"
    first = launch.install_fingerprint("pip install torch", b"gradio==6\n", "3.11.7")

    run = RecordingRunner()
    assert launch.ensure_installed(stamp, first, COMMANDS, run, what="reqs") is True
    assert run.commands == COMMANDS  # torch first, then requirements
    assert launch.stamp_is_current(stamp, first)

    run = RecordingRunner()
    assert launch.ensure_installed(stamp, first, COMMANDS, run, what="reqs") is False
    assert run.commands == []

    changed = launch.install_fingerprint("pip install torch", b"gradio==6\ndiffusers\n", "3.11.7")
    run = RecordingRunner()
    assert launch.ensure_installed(stamp, changed, COMMANDS, run, what="reqs") is True
    assert run.commands == COMMANDS
    assert launch.stamp_is_current(stamp, changed) and not launch.stamp_is_current(stamp, first)


def test_failed_install_leaves_no_stamp_so_the_next_start_retries(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    old = launch.install_fingerprint("a", b"b", "c")
    launch.write_stamp(stamp, old, {})
    new = launch.install_fingerprint("a", b"b2", "c")
    with pytest.raises(launch.LaunchError, match="exit code 1"):
        launch.ensure_installed(stamp, new, COMMANDS, RecordingRunner(fail_on="-r"), what="reqs")
    assert not stamp.exists()  # not even the old one: the venv is now in an unknown state


@pytest.mark.parametrize("content", ["", "not json", "[]", '{"fingerprint": "other"}'])
def test_missing_or_corrupt_stamp_is_stale(tmp_path: Path, content: str) -> None:
    stamp = tmp_path / "stamp"
    if content:
        stamp.write_text(content)
    assert not launch.stamp_is_current(stamp, "abc")


def test_torch_command_runs_pip_through_the_venv_python() -> None:
    python = Path("/x/.venv/bin/python")
    assert launch.torch_install_command("pip install torch==2.14.1 torchvision==0.29.1", python) == [
        str(python),
        "-m",
        "pip",
        "install",
        "torch==2.14.1",
        "torchvision==0.29.1",
    ]
    custom = "uv pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert launch.torch_install_command(custom, python) == custom.split()
    with pytest.raises(launch.LaunchError, match="empty"):
        launch.torch_install_command("  ", python)


# --- chromium ----------------------------------------------------------------------------------


def test_chromium_not_root_only_prints_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launch, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    run = RecordingRunner()
    launch.ensure_chromium(run)
    assert run.commands == []
    assert "browser tests" in capsys.readouterr().out


def test_chromium_apt_update_only_after_a_failed_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")

    class FailsOnce(RecordingRunner):
        def __call__(self, command: Sequence[str]) -> None:
            super().__call__(command)
            if len(self.commands) == 1:
                raise launch.LaunchError("stale lists")

    run = FailsOnce()
    launch.ensure_chromium(run)
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-noto-color-emoji"]
    assert run.commands == [install, ["apt-get", "update"], install]

    run = RecordingRunner()
    launch.ensure_chromium(run)
    assert run.commands == [install]


# --- the whole bootstrap, in a throw-away checkout --------------------------------------------

STUB_APP = """
import json, os, sys

def serve(args):
    record = {"prefix": sys.prefix, "port": args.port, "host": args.host,
              "data_dir": str(args.data_dir), "leaked": os.environ.get("ATELIER_LAUNCH_BOOTSTRAPPED")}
    (args.data_dir / "served.json").write_text(json.dumps(record))
"""


def _fake_checkout(root: Path) -> Path:
    (root / "engine").mkdir(parents=True)
    (root / "ui").mkdir()
    shutil.copy(REPO / "launch.py", root / "launch.py")
    shutil.copy(REPO / "engine" / "cmd_args.py", root / "engine" / "cmd_args.py")
    (root / "ui" / "server.py").write_text(STUB_APP)
    # pip is in every fresh venv, so this install is satisfied without any network.
    (root / "requirements.txt").write_text("pip\n")
    return root


def _launch(repo: Path, *argv: str, torch_command: str = "pip --version") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env.pop(launch.BOOTSTRAPPED_ENV, None)
    env["TORCH_COMMAND"] = torch_command  # stands in for the multi-GB torch install
    # Start from the base interpreter, as a user on a fresh machine would with `python3 launch.py`.
    python = getattr(sys, "_base_executable", sys.executable)
    return subprocess.run(
        [python, str(repo / "launch.py"), *argv],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_bootstrap_creates_venv_installs_once_then_serves_inside_it(tmp_path: Path) -> None:
    repo = _fake_checkout(tmp_path / "checkout")
    data = tmp_path / "data"
    data.mkdir()
    argv = ("--port", "7999", "--data-dir", str(data))

    first = _launch(repo, *argv)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "-m pip --version" in first.stdout and "-m pip install -r" in first.stdout
    served = json.loads((data / "served.json").read_text())
    assert Path(served["prefix"]).resolve() == (repo / ".venv").resolve()
    assert (served["port"], served["host"], served["leaked"]) == (7999, "127.0.0.1", None)
    assert (repo / ".venv" / ".atelier-install.stamp").exists()

    # Second start, nothing changed: no pip at all.
    (data / "served.json").unlink()
    second = _launch(repo, *argv)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "up to date, skipping pip" in second.stdout and "running:" not in second.stdout
    assert (data / "served.json").exists()

    # --skip-install never runs pip, even with stale inputs.
    (repo / "requirements.txt").write_text("pip\n# changed\n")
    skipped = _launch(repo, "--skip-install", *argv)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "pip" not in skipped.stdout

    # Changed requirements: pip runs again.
    third = _launch(repo, *argv)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "-m pip install -r" in third.stdout

    # A failing install names the command, exits non-zero and does not serve.
    (data / "served.json").unlink()
    failed = _launch(repo, *argv, torch_command="pip no-such-pip-command")
    assert failed.returncode == 1
    assert "command failed with exit code" in failed.stderr and "no-such-pip-command" in failed.stderr
    assert not (data / "served.json").exists()
    assert not (repo / ".venv" / ".atelier-install.stamp").exists()
