"""The web server: one FastAPI app holding the API routes and the Gradio page, wrapped in the web
guard (api.web_guard) and served by uvicorn.

The app is complete before the port opens: the API's routes are there from the first moment the
page answers, and the guard sees every request, the server's own error pages included.
`serve(args)` creates the engine, starts listening, and warms the model up in a background thread.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import webbrowser
from typing import Any

import gradio as gr
import uvicorn
from fastapi import FastAPI

from api.errors import install_error_handlers
from api.web_guard import HostPolicy, WebGuard
from ui.app import build_ui, page_kwargs
from ui.common import EngineLike, error_message

DEFAULT_PORT = 7860
# Open event streams (a browser tab's queue) would hold a graceful shutdown open for ever.
SHUTDOWN_GRACE_SECONDS = 3


def address(args: argparse.Namespace) -> tuple[str, int]:
    """(interface, port) to listen on: every interface with --listen, else this machine only."""
    host = "0.0.0.0" if getattr(args, "listen", False) else "127.0.0.1"
    return host, getattr(args, "port", None) or DEFAULT_PORT


def host_policy(args: argparse.Namespace) -> HostPolicy:
    return HostPolicy.from_flags(
        listen=bool(getattr(args, "listen", False)), allowed_hosts=getattr(args, "allowed_hosts", ())
    )


def build_app(engine: EngineLike, args: argparse.Namespace) -> WebGuard:
    """The whole server as one ASGI app: guard → (API routes, the Gradio page at /)."""
    api = bool(getattr(args, "api", False))
    # FastAPI's interactive docs describe /sdapi/v1, so they are served only with it.
    app = FastAPI(
        title="Atelier",
        docs_url="/docs" if api else None,
        openapi_url="/openapi.json" if api else None,
        redoc_url=None,
    )
    install_error_handlers(app)
    if api:
        from api.routes import create_api

        create_api(app, engine, args)
    demo = build_ui(engine)
    demo.queue()
    host, port = address(args)
    # Gradio's own app would describe its internal routes at /openapi.json: only ours are documented.
    internal = {"docs_url": None, "openapi_url": None, "redoc_url": None}
    gr.mount_gradio_app(
        app, demo, path="/", server_name=host, server_port=port, app_kwargs=internal, **page_kwargs(args)
    )
    return WebGuard(app, host_policy(args))


def _warm_up(engine: EngineLike) -> None:
    """Load the default checkpoint once the server is up, so the first Generate is quick."""
    try:
        title = engine.current_checkpoint()
        if title:
            engine.load_checkpoint(title)
    except Exception as exc:  # the UI reports it again on use; the server must keep running
        print(f"Atelier: could not load the default checkpoint: {error_message(exc)}", file=sys.stderr)


def _announce(server: uvicorn.Server, url: str, open_browser: bool) -> None:
    """Say where the UI is once the port is open (and open it, with --autolaunch)."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    print(f"Running on local URL:  {url}", flush=True)
    if open_browser:
        webbrowser.open(url)


def serve(args: argparse.Namespace) -> None:
    """Create the engine, serve the UI (and the API with --api) and block until Ctrl+C."""
    from engine.service.facade import Engine  # imported here: pulls in torch, which the UI tests avoid

    engine = Engine.from_args(args)
    app: Any = build_app(engine, args)
    host, port = address(args)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS
        )
    )
    url = f"http://127.0.0.1:{port}"
    threading.Thread(
        target=_announce, args=(server, url, bool(getattr(args, "autolaunch", False))), daemon=True
    ).start()
    threading.Thread(target=_warm_up, args=(engine,), name="atelier-warm-up", daemon=True).start()
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind; it has logged the OS's reason
        if not server.started:
            print(
                f"Atelier could not listen on {host}:{port}. Is another program using that port? "
                "Choose another with --port N.",
                file=sys.stderr,
            )
        raise
