"""Command-line flags for `launch.py`, in the spirit of A1111's `modules/cmd_args.py`.

This module must import nothing beyond the standard library: `launch.py` loads it with the
system Python *before* the virtual environment exists (a fresh machine has no torch, no
pydantic), and `python3 launch.py --help` should answer instantly.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 7860
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
RUN_TESTS_FLAG = "--run-tests"


def _port(text: str) -> int:
    """argparse type for a TCP port; a typo like 78600 should fail here, not deep inside uvicorn."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: must be between 1 and 65535")
    return value


_LABEL = r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(\*|(\*\.)?{_LABEL}(\.{_LABEL})*)$")  # "*", "studio.lan", "*.example.lan"


def _host_names(text: str) -> tuple[str, ...]:
    """argparse type for --allowed-hosts: comma-separated host names, lower-cased."""
    names = tuple(name.strip().lower().rstrip(".") for name in text.split(",") if name.strip())
    for name in names:
        if not _HOST_NAME.match(name):
            raise argparse.ArgumentTypeError(
                f"invalid host name {name[:80]!r}: give names like studio.lan or *.example.lan, "
                "without a scheme, port or path"
            )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description=(
            "Atelier, a Stable Diffusion web UI. The first start creates .venv/ and installs the "
            "dependencies; later starts skip pip unless requirements.txt or TORCH_COMMAND changed."
        ),
        epilog=(
            "Environment: TORCH_COMMAND overrides how torch is installed "
            "(default: 'pip install torch==2.14.1 torchvision==0.29.1')."
        ),
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--listen",
        action="store_true",
        help="bind to 0.0.0.0 so other machines on the network can reach the UI (default: 127.0.0.1 only)",
    )
    server.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to serve the UI and API on (default: {DEFAULT_PORT})",
    )
    server.add_argument(
        "--allowed-hosts",
        type=_host_names,
        default=(),
        metavar="NAME[,NAME2]",
        help=(
            "host names the server answers to besides localhost and 127.0.0.1 (with --listen also "
            "any IP address and this machine's name): a LAN name or a reverse proxy's, e.g. "
            "studio.lan; '*.example.lan' for a whole domain; '*' turns the host check off. Requests "
            "for other names are refused, which stops web pages from reaching Atelier through DNS "
            "rebinding"
        ),
    )
    server.add_argument(
        "--autolaunch", action="store_true", help="open the UI in the system's default browser once it is up"
    )

    api = parser.add_argument_group("HTTP API and access")
    api.add_argument(
        "--api", action="store_true", help="serve A1111's HTTP API at /sdapi/v1 (interactive docs at /docs)"
    )
    api.add_argument(
        "--api-auth",
        default=None,
        metavar="USER:PASS[,USER2:PASS2]",
        help="require HTTP Basic credentials for the API",
    )
    api.add_argument(
        "--gradio-auth",
        default=None,
        metavar="USER:PASS[,USER2:PASS2]",
        help="require a login for the web UI",
    )
    api.add_argument(
        "--api-allow-image-urls",
        action="store_true",
        help=(
            "let API requests give pictures as http(s) URLs, fetched by the server (never from "
            "loopback, private or link-local addresses); off by default: pictures come as base64"
        ),
    )

    paths = parser.add_argument_group("folders")
    paths.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for config.json, outputs/ and cache/ (default: the repository root)",
    )
    paths.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "another models folder (same layout as models/: Stable-diffusion/, VAE/, ...) "
            "scanned besides the repository's models/, which holds the built-in model"
        ),
    )
    paths.add_argument(
        "--controlnet-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of ControlNet models (default: models/ControlNet; annotators/ inside it)",
    )
    paths.add_argument(
        "--outdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="save every image under this folder, overriding the output folders in Settings",
    )

    extensions = parser.add_argument_group("extensions")
    extensions.add_argument(
        "--extensions-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for your extensions (default: <data dir>/extensions); the built-in ones always load",
    )
    extensions.add_argument(
        "--disable-all-extensions", action="store_true", help="start without loading any extension"
    )
    extensions.add_argument(
        "--enable-insecure-extension-access",
        action="store_true",
        help=(
            "allow installing extensions from the Extensions tab even with --listen (anyone who "
            "reaches the UI could then run code on this machine)"
        ),
    )

    compute = parser.add_argument_group("compute")
    compute.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to run the model; auto picks cuda, then mps, then cpu (default: auto)",
    )
    compute.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="weights/activations dtype; auto is fp16 on cuda/mps and fp32 on cpu (default: auto)",
    )
    plans = compute.add_mutually_exclusive_group()
    plans.add_argument(
        "--medvram",
        action="store_true",
        help="text encoders, UNet and VAE take turns on the GPU (less VRAM, a little slower); "
        "default: chosen per job from the free GPU memory",
    )
    plans.add_argument(
        "--lowvram",
        action="store_true",
        help="each layer comes to the GPU only while it runs (least VRAM, slowest)",
    )
    plans.add_argument("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    plans.add_argument(
        "--gpu-only", action="store_true", help="keep every part on the GPU, whatever the free memory"
    )
    compute.add_argument(
        "--no-half-vae",
        action="store_true",
        help="keep the VAE in fp32 even when the model runs in fp16/bf16 (avoids black or NaN images)",
    )

    setup = parser.add_argument_group("setup and testing")
    setup.add_argument(
        "--skip-install",
        action="store_true",
        help="never run pip; use .venv/ as it is (or the current interpreter when there is no .venv/)",
    )
    setup.add_argument(
        RUN_TESTS_FLAG,
        nargs=argparse.REMAINDER,
        default=None,
        metavar="PYTEST_ARGS",
        help=(
            "set up the test extras (requirements-test.txt, Debian chromium) and run pytest instead "
            "of the UI; every argument after this flag goes to pytest (default: the whole tests/ suite)"
        ),
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and resolve flags. Folders come back absolute, so later code never depends on the cwd.

    Everything after `--run-tests` is handed to pytest untouched (`-k`, `-x`, paths, even
    `--port`). It is split off by hand because argparse's REMAINDER rejects a leading `--`.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] | None = None
    if RUN_TESTS_FLAG in args_list:
        cut = args_list.index(RUN_TESTS_FLAG)
        pytest_args = args_list[cut + 1 :]
        if pytest_args[:1] == ["--"]:
            pytest_args = pytest_args[1:]
        args_list = args_list[:cut]

    args = build_parser().parse_args(args_list)
    args.run_tests = pytest_args

    args.data_dir = (args.data_dir or REPO_ROOT).expanduser().resolve()
    # None: only the repository's models/ (the engine always scans it; the built-in model lives there).
    args.models_dir = args.models_dir.expanduser().resolve() if args.models_dir else None
    args.controlnet_dir = args.controlnet_dir.expanduser().resolve() if args.controlnet_dir else None
    args.extensions_dir = args.extensions_dir.expanduser().resolve() if args.extensions_dir else None
    # A1111's rule: installing code from the browser is for a UI only this machine can reach.
    args.extension_install_allowed = not args.listen or args.enable_insecure_extension_access
    # None keeps the per-tab folders from Settings (relative to data_dir); a flag overrides them all.
    args.outdir = args.outdir.expanduser().resolve() if args.outdir else None
    # Derived paths, so the app does not re-invent where they live.
    args.config_file = args.data_dir / "config.json"
    args.cache_dir = args.data_dir / "cache"
    args.host = "0.0.0.0" if args.listen else "127.0.0.1"
    return args
