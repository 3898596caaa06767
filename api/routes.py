"""`/sdapi/v1`: A1111's HTTP API over the engine (`--api`).

Every generation goes through the engine's one FIFO job queue, which the UI uses too: requests run
one at a time in the order they arrived, a failing job never blocks the next, and `progress`,
`interrupt` and `skip` act on whichever job is running. Handlers are plain `def`s: FastAPI runs
them in its thread pool, so a request waiting for its job never blocks the server.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import psutil
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import ValidationError

from api import convert
from api.auth import BasicAuth, parse_credentials, require_basic_auth
from api.errors import JSONErrorRoute
from api.extension_routes import controlnet_router, extensions_list
from api.images import encode_image
from api.models import (
    ExtrasBatchRequest,
    ExtrasBatchResponse,
    ExtrasSingleRequest,
    ExtrasSingleResponse,
    GenerationResponse,
    Img2ImgRequest,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    Txt2ImgRequest,
)
from api.options import SECRET_FLAGS, apply_options, current_options
from engine.output.images import SaveError
from engine.schema.infotext import parse_infotext, read_png_parameters
from engine.upscale.extras import ExtrasParams
from engine.upscale.upscalers import LATENT_MODES

PREFIX = "/sdapi/v1"


def create_api(app: FastAPI, engine: Any, args: argparse.Namespace) -> None:
    """Add the routes to `app` (the server Gradio runs)."""
    credentials = parse_credentials(getattr(args, "api_auth", None))
    auth = BasicAuth(credentials) if credentials else None
    allow_urls = bool(getattr(args, "api_allow_image_urls", False))
    dependencies = [Depends(require_basic_auth(auth))]
    router = APIRouter(
        prefix=PREFIX,
        dependencies=dependencies,
        tags=["sdapi"],
        route_class=JSONErrorRoute,
    )

    def wait(job: Any) -> Any:
        job.wait()
        if job.error is not None:
            if isinstance(job.error, SaveError):  # 507: the client may retry once space is freed
                raise HTTPException(507 if job.error.disk_full else 500, str(job.error))
            if isinstance(job.error, (ValueError, ValidationError)):
                raise HTTPException(400, str(job.error))
            raise HTTPException(500, f"{type(job.error).__name__}: {job.error}")
        return job.result

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

    def extras_params(request: Any) -> ExtrasParams:
        try:
            return ExtrasParams(
                resize_mode=request.resize_mode,
                upscaling_resize=request.upscaling_resize,
                upscaling_resize_w=request.upscaling_resize_w,
                upscaling_resize_h=request.upscaling_resize_h,
                upscaling_crop=request.upscaling_crop,
                upscaler_1=request.upscaler_1,
                upscaler_2=request.upscaler_2,
                upscaler_2_visibility=request.extras_upscaler_2_visibility,
            )
        except ValidationError as exc:
            raise convert.invalid((exc.errors()[0]["loc"][0],), exc.errors()[0]["msg"]) from None

    def check_upscalers(params: ExtrasParams) -> None:
        names = engine.upscaler_names()
        for field in ("upscaler_1", "upscaler_2"):
            if getattr(params, field) not in names:
                raise convert.invalid((field,), f"unknown upscaler; GET {PREFIX}/upscalers lists them")

    @router.post("/extra-single-image", response_model=ExtrasSingleResponse)
    def extra_single_image(request: ExtrasSingleRequest) -> dict[str, Any]:
        params = extras_params(request)
        check_upscalers(params)
        picture = convert._picture(("image",), request.image, allow_urls)
        result = wait(engine.submit_extras(params, [picture]))
        text = result.infotexts[0] if result.infotexts else ""
        return {"html_info": text, "image": encode_image(result.images[0], infotext=text or None)}

    @router.post("/extra-batch-images", response_model=ExtrasBatchResponse)
    def extra_batch_images(request: ExtrasBatchRequest) -> dict[str, Any]:
        params = extras_params(request)
        check_upscalers(params)
        if not request.imageList:
            raise convert.invalid(("imageList",), "give at least one picture")
        pictures = [
            convert._picture(("imageList", i, "data"), f.data, allow_urls)
            for i, f in enumerate(request.imageList)
        ]
        result = wait(engine.submit_extras(params, pictures))
        images = [
            encode_image(im, infotext=t or None)
            for im, t in zip(result.images, result.infotexts, strict=True)
        ]
        return {"html_info": "\n".join(result.infotexts), "images": images}

    @router.post("/png-info", response_model=PNGInfoResponse)
    def png_info(request: PNGInfoRequest) -> dict[str, Any]:
        picture = convert._picture(("image",), request.image, allow_urls)
        text = read_png_parameters(picture) or ""
        items = {"parameters": text} if text else {}
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    @router.get("/options")
    def get_options() -> dict[str, Any]:
        return current_options(engine)

    @router.post("/options")
    def set_options(changes: dict[str, Any]) -> dict[str, Any]:
        return apply_options(engine, changes)

    @router.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        flags = {}
        for key, value in vars(args).items():
            if key in SECRET_FLAGS:
                value = "***" if value else None
            flags[key] = str(value) if isinstance(value, Path) else value
        return flags

    @router.get("/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        return [
            {
                "title": c.title,
                "model_name": c.name,
                "hash": None,
                "sha256": None,
                "filename": str(c.path),
                "config": None,
            }
            for c in engine.models.list_checkpoints()
        ]

    @router.get("/sd-vae")
    def sd_vae() -> list[dict[str, Any]]:
        return [{"model_name": p.name, "filename": str(p)} for p in engine.models.list_vaes()]

    @router.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        return [{"name": name, "aliases": [], "options": {}} for name in engine.sampler_names()]

    @router.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        return [
            {"name": name, "label": name, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for name in engine.schedule_names()
        ]

    @router.get("/upscalers")
    def upscalers() -> list[dict[str, Any]]:
        return [
            {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": None}
            for name in engine.upscaler_names()
        ]

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes() -> list[dict[str, str]]:
        return [{"name": name} for name in LATENT_MODES]

    @router.get("/loras")
    def loras() -> list[dict[str, Any]]:
        return [
            {"name": p.stem, "alias": p.stem, "path": str(p), "metadata": {}} for p in engine.loras.files()
        ]

    @router.post("/refresh-loras")
    def refresh_loras() -> None:
        engine.loras.refresh()

    @router.get("/embeddings")
    def embeddings() -> dict[str, Any]:
        model = engine.models.get(engine.current_checkpoint())
        db = engine.embeddings_for(model)
        loaded = {
            name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                   "shape": int(e.vectors.shape[-1]), "vectors": int(e.vectors.shape[0])}
            for name, e in db.embeddings.items()
        }  # fmt: skip
        return {"loaded": loaded, "skipped": {name: {"reason": why} for name, why in db.skipped.items()}}

    @router.get("/prompt-styles")
    def prompt_styles() -> list[dict[str, str]]:
        styles = engine.styles().styles.values()
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles]

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

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        engine.refresh_checkpoints()

    @router.get("/memory")
    def memory() -> dict[str, Any]:
        vm, process = psutil.virtual_memory(), psutil.Process(os.getpid())
        ram = {
            "free": vm.available,
            "used": vm.total - vm.available,
            "total": vm.total,
            "process_rss": process.memory_info().rss,
        }
        cuda: dict[str, Any] = {"error": "no CUDA device"}
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            active = {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()}
            cuda = {"system": {"free": free, "used": total - free, "total": total}, "active": active}
        return {"ram": ram, "cuda": cuda}

    @router.get("/scripts")
    def scripts() -> dict[str, list[str]]:
        return {
            kind: [s.title.lower() for s in engine.extensions.scripts_for(kind)]
            for kind in ("txt2img", "img2img")
        }

    @router.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        return extensions_list(engine)

    app.include_router(router)
    app.include_router(controlnet_router(engine, dependencies, allow_urls))
