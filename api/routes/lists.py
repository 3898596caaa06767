"""What the engine has, as A1111 lists it: checkpoints, VAEs, samplers, schedule types,
upscalers, LoRAs, embeddings, styles, scripts and extensions (and the refreshes of those lists)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.routes.common import make_router
from api.routes.extensions import extensions_list
from engine.upscale.upscalers import LATENT_MODES


def lists_router(engine: Any, dependencies: list[Any]) -> APIRouter:
    router = make_router(dependencies)

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
        db = engine.embeddings_for(engine.loaded_model())  # loads through the queue when none is
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

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        engine.refresh_checkpoints()

    @router.get("/scripts")
    def scripts() -> dict[str, list[str]]:
        return {
            kind: [s.title.lower() for s in engine.extensions.scripts_for(kind)]
            for kind in ("txt2img", "img2img")
        }

    @router.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        return extensions_list(engine)

    return router
