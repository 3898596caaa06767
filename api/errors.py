"""How the HTTP API answers when something is wrong: always JSON, always a status that says whose
fault it was, and never a second failure while writing the answer.

- A value the client sent that is not a finite number (`NaN`, `Infinity`: Python's JSON parser
  accepts both) is a 422 naming the field, found by walking the body before the route runs, so
  every field of every route is covered, even those handed on untyped (script args).
- A validation error whose offending input cannot be written as JSON (that same NaN, bytes, an
  object) is still a 422: its inputs are made JSON-safe rather than crashing the error handler.
- Anything unexpected is a 500 in A1111's {error, detail} shape, with the traceback in the log.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
NOT_FINITE = "must be a finite number (NaN and Infinity are not numbers a picture can use)"
_MAX_DEPTH = 64  # deeper JSON is refused before it is walked (and no A1111 body nests this deep)


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` with everything JSON cannot hold made into text: non-finite floats, bytes, objects."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > _MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)[:200]


def non_finite_path(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], Any] | None:
    """(path, value) of the first NaN/±Infinity inside parsed JSON, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if len(path) > _MAX_DEPTH:
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite_path(item, (*path, key))
        if found is not None:
            return found
    return None


def validation_error(
    path: tuple[Any, ...], message: str, value: Any = None, kind: str = "value_error"
) -> RequestValidationError:
    """A 422 naming the request field, in FastAPI's own error shape."""
    return RequestValidationError([{"loc": ("body", *path), "msg": message, "type": kind, "input": value}])


class JSONErrorRoute(APIRoute):
    """A route that refuses non-finite numbers anywhere in its JSON body, and whose unexpected
    failures still answer in JSON (A1111's {error, detail} shape) instead of a bare "Internal
    Server Error" page; the traceback goes to the log."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                await _refuse_non_finite(request)
                return await handler(request)
            except (StarletteHTTPException, RequestValidationError):
                raise
            except Exception as exc:
                log.exception("API %s failed", request.url.path)
                body = {"error": type(exc).__name__, "detail": str(exc) or type(exc).__name__}
                return JSONResponse(json_safe(body), status_code=500)

        return guarded


async def _refuse_non_finite(request: Request) -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if "json" not in request.headers.get("content-type", "application/json").lower():
        return
    body = await request.body()  # cached on the request: the route reads it again for free
    if b"NaN" not in body and b"Infinity" not in body:
        return  # the usual case: no second parse of a body that may hold megabytes of base64
    try:
        data = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI answers it with its own 422
    found = non_finite_path(data)
    if found is not None:
        path, value = found
        raise validation_error(path, NOT_FINITE, str(value), kind="finite_number")


def install_error_handlers(app: FastAPI) -> None:
    """JSON answers for validation errors and HTTP errors that survive any input they quote."""

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in error.items() if k != "url"} for error in exc.errors()]
        return JSONResponse({"detail": json_safe(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and the router's 404/405
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": json_safe(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )
