"""Generation: txt2img and img2img, and the job they wait for (progress, interrupt, skip).

Every generation goes through the engine's one FIFO job queue, which the UI uses too: requests run
one at a time in the order they arrived, a failing job never blocks the next, and `progress`,
`interrupt` and `skip` act on whichever job is running. Handlers are plain `def`s: FastAPI runs
them in its thread pool, so a request waiting for its job never blocks the server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from api import convert
from api.images import encode_image
from api.models import GenerationResponse, Img2ImgRequest, ProgressResponse, Txt2ImgRequest
from api.routes.common import make_router, wait


def generation_router(engine: Any, dependencies: list[Any], allow_urls: bool) -> APIRouter:
    router = make_router(dependencies)

    def submit(request: Any, *, img2img: bool) -> dict[str, Any]:
        req = convert.to_engine_request(request, engine, allow_urls=allow_urls, img2img=img2img)
        options = dict(
            control=req.control,
            extension_args=req.extension_args or None,
            script=req.script,
            vae=req.vae,
            save_images=request.save_images,
        )
        try:
            if img2img:
                job = engine.submit_img2img(req.params, req.inputs, **options)
            else:
                job = engine.submit_txt2img(req.params, **options)
        except ValueError as exc:  # refused at submit: an unknown extension or script, a bad style
            raise HTTPException(400, str(exc)) from None
        return convert.generation_response(request, wait(job), req.notes)

    @router.post("/txt2img", response_model=GenerationResponse)
    def txt2img(request: Txt2ImgRequest) -> dict[str, Any]:
        return submit(request, img2img=False)

    @router.post("/img2img", response_model=GenerationResponse)
    def img2img(request: Img2ImgRequest) -> dict[str, Any]:
        return submit(request, img2img=True)

    @router.get("/progress", response_model=ProgressResponse)
    def progress(skip_current_image: bool = False) -> dict[str, Any]:
        job = engine.queue.current
        pending = engine.queue.pending()
        if job is None:
            state = dict(skipped=False, interrupted=False, job="", job_count=pending, job_timestamp="0",
                         job_no=0, sampling_step=0, sampling_steps=0)  # fmt: skip
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None,
                    "textinfo": None, "queue_pending": pending}  # fmt: skip
        p = job.progress
        steps_per_batch = p.job_steps // max(1, p.batches)
        state = dict(
            skipped=False,
            interrupted=job.interrupted,
            job=job.kind,
            job_count=p.batches,
            job_timestamp=str(int(p.started)),
            job_no=p.batch,
            sampling_step=p.job_step - p.batch * steps_per_batch,
            sampling_steps=steps_per_batch,
        )
        image = None
        if not skip_current_image and job.preview is not None:
            image = encode_image(job.preview)
        return {
            "progress": p.fraction,
            "eta_relative": p.eta_seconds or 0.0,
            "state": state,
            "current_image": image,
            "textinfo": p.textinfo or None,
            "queue_pending": pending,
        }

    @router.post("/interrupt")
    def interrupt() -> None:
        job = engine.queue.current
        if job is not None:
            job.interrupt()

    @router.post("/skip")
    def skip() -> None:
        job = engine.queue.current
        if job is not None:
            job.skip()

    return router
