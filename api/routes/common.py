"""What the route modules share: the prefix, a router with the API's auth and error policy, and
waiting for a job with its failure turned into the HTTP error a client can act on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import ValidationError

from api.errors import JSONErrorRoute
from engine.output.images import SaveError
from engine.service.memory import OutOfMemory

PREFIX = "/sdapi/v1"


def make_router(dependencies: list[Any]) -> APIRouter:
    return APIRouter(prefix=PREFIX, dependencies=dependencies, tags=["sdapi"], route_class=JSONErrorRoute)


def wait(job: Any) -> Any:
    job.wait()
    if job.error is not None:
        if isinstance(job.error, SaveError):  # 507: the client may retry once space is freed
            raise HTTPException(507 if job.error.disk_full else 500, str(job.error))
        if isinstance(job.error, OutOfMemory):
            # 507 as for a full disk: the server lacked a resource for this request, and a smaller
            # one (the message says what to try) can succeed. Not 500, which says the server is
            # broken; not 4xx, since the same request may fit on a larger GPU. The body is
            # {"detail": ...} as for every job failure here.
            raise HTTPException(507, str(job.error))
        if isinstance(job.error, (ValueError, ValidationError)):
            raise HTTPException(400, str(job.error))
        raise HTTPException(500, f"{type(job.error).__name__}: {job.error}")
    return job.result
