"""What the route modules share: the prefix, a router with the API's auth and error policy, and
waiting for a job with its failure turned into the HTTP error a client can act on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import ValidationError

from api.errors import JSONErrorRoute
from engine.output.images import SaveError

PREFIX = "/sdapi/v1"


def make_router(dependencies: list[Any]) -> APIRouter:
    return APIRouter(prefix=PREFIX, dependencies=dependencies, tags=["sdapi"], route_class=JSONErrorRoute)


def wait(job: Any) -> Any:
    job.wait()
    if job.error is not None:
        if isinstance(job.error, SaveError):  # 507: the client may retry once space is freed
            raise HTTPException(507 if job.error.disk_full else 500, str(job.error))
        if isinstance(job.error, (ValueError, ValidationError)):
            raise HTTPException(400, str(job.error))
        raise HTTPException(500, f"{type(job.error).__name__}: {job.error}")
    return job.result
