"""`/sdapi/v1`: A1111's HTTP API over the engine (`--api`), one module per resource: generation
(txt2img, img2img, progress, interrupt, skip), pictures (Upscaling, png-info), lists (models,
samplers, upscalers, styles, scripts, extensions, ...), system (options, flags, memory), and the
ControlNet extension's `/controlnet/*` (extensions)."""

from __future__ import annotations

import argparse
from typing import Any

from fastapi import Depends, FastAPI

from api.auth import BasicAuth, parse_credentials, require_basic_auth
from api.routes.extensions import controlnet_router
from api.routes.generation import generation_router
from api.routes.lists import lists_router
from api.routes.pictures import pictures_router
from api.routes.system import system_router


def create_api(app: FastAPI, engine: Any, args: argparse.Namespace) -> None:
    """Add the routes to `app` (the server the Gradio page is mounted on)."""
    credentials = parse_credentials(getattr(args, "api_auth", None))
    auth = BasicAuth(credentials) if credentials else None
    allow_urls = bool(getattr(args, "api_allow_image_urls", False))
    dependencies = [Depends(require_basic_auth(auth))]
    for router in (
        generation_router(engine, dependencies, allow_urls),
        pictures_router(engine, dependencies, allow_urls),
        lists_router(engine, dependencies),
        system_router(engine, dependencies, args),
        controlnet_router(engine, dependencies, allow_urls),
    ):
        app.include_router(router)
