"""Pictures without generation: the Upscaling tab's jobs (A1111's extra-single-image and
extra-batch-images) and reading a picture's parameters (png-info)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from api import convert
from api.images import encode_image
from api.models import (
    ExtrasBatchRequest,
    ExtrasBatchResponse,
    ExtrasSingleRequest,
    ExtrasSingleResponse,
    PNGInfoRequest,
    PNGInfoResponse,
)
from api.routes.common import PREFIX, make_router, wait
from engine.schema.infotext import parse_infotext, read_png_parameters
from engine.upscale.extras import ExtrasParams


def pictures_router(engine: Any, dependencies: list[Any], allow_urls: bool) -> APIRouter:
    router = make_router(dependencies)

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

    return router
