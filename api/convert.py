"""A1111 request bodies → engine requests, and results → A1111 response bodies.

Every rule about values lives in engine.schema.params: a request becomes GenerationParams here, and a
rejected value is raised as FastAPI's RequestValidationError with the request's own field name,
so the client gets the same 422 shape it gets for a wrong JSON type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.errors import validation_error as invalid
from api.images import decode_image, encode_image
from api.models import Img2ImgRequest, Txt2ImgRequest
from engine.controlnet.preprocessors import canonical_name
from engine.controlnet.units import CONTROL_MODES, HR_OPTIONS, RESIZE_MODES, ControlInput, ControlNetUnit
from engine.pipeline.img2img import Img2ImgInputs
from engine.plugins.args import ArgsError, arg_values
from engine.plugins.script_jobs import ScriptCall
from engine.schema.infotext import params_from_infotext
from engine.schema.params import GenerationParams, Img2ImgParams
from engine.schema.settings import Settings

# Request fields that are not GenerationParams fields, and A1111 names that map onto ours.
_API_ONLY = {
    "sampler_index", "eta", "override_settings", "override_settings_restore_afterwards", "script_name",
    "script_args", "send_images", "save_images", "alwayson_scripts", "infotext", "init_images", "mask",
    "include_init_images",
}  # fmt: skip
CONTROLNET_KEYS = ("controlnet", "ControlNet")


@dataclass
class EngineRequest:
    """What the engine's submit_* takes for one API request."""

    params: GenerationParams
    control: list[ControlInput] | None = None
    extension_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: ScriptCall | None = None
    vae: str | None = None
    inputs: Img2ImgInputs | None = None
    notes: list[str] = field(default_factory=list)


def to_params(
    request: Txt2ImgRequest, engine: Any, cls: type[GenerationParams]
) -> tuple[GenerationParams, str | None, list[str]]:
    """(params, the job's VAE or None, notes). 422 for a value the schema refuses."""
    sent = request.model_dump(exclude_unset=True)
    data: dict[str, Any] = {}
    if request.infotext:
        data.update(params_from_infotext(request.infotext, cls())[0].model_dump(exclude_defaults=True))
    for name, value in sent.items():
        if name in _API_ONLY or name not in cls.model_fields or value is None:
            continue
        data[name] = tuple(value) if name == "styles" else value
    sampler = sent.get("sampler_name") or sent.get("sampler_index")
    data["sampler_name"] = sampler or data.get("sampler_name") or engine.settings.default_sampler
    data.setdefault("scheduler", "Automatic")
    if sent.get("eta") is not None:  # A1111's one eta serves the ancestral samplers and DDIM
        data["eta_ancestral"] = data["eta_ddim"] = sent["eta"]
    if cls is GenerationParams and sent.get("denoising_strength") is None:
        data.pop("denoising_strength", None)  # hires fix's own default
    vae, notes = _override_settings(request.override_settings or {}, data, cls)
    try:
        params = cls.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    if params.checkpoint and params.checkpoint not in engine.list_checkpoints():
        raise HTTPException(
            404, f"checkpoint not found: {params.checkpoint!r} (GET /sdapi/v1/sd-models lists them)"
        )
    if params.refiner_checkpoint and not engine.has_checkpoint(params.refiner_checkpoint):
        raise HTTPException(
            404,
            f"refiner not found: {params.refiner_checkpoint!r} (GET /sdapi/v1/sd-models lists them)",
        )
    if vae is not None and vae not in engine.vae_names():
        raise HTTPException(404, f"VAE not found: {vae!r} (GET /sdapi/v1/sd-vae lists them)")
    if params.enable_hr and params.hr_upscaler not in engine.engine_names().hires_upscalers:
        raise invalid(("hr_upscaler",), f"unknown upscaler {params.hr_upscaler!r}", params.hr_upscaler)
    return params, vae, notes


def _override_settings(overrides: dict[str, Any], data: dict[str, Any], cls) -> tuple[str | None, list[str]]:
    """A1111's per-request settings. Sampler parameters and clip skip are job fields already; the
    checkpoint and VAE apply to this job only; other Settings cannot change per job (noted)."""
    vae, notes = None, []
    for key, value in overrides.items():
        if key == "sd_model_checkpoint":
            data["checkpoint"] = value
        elif key == "sd_vae":
            vae = str(value)
        elif key in cls.model_fields:
            data[key] = value
        elif key in Settings.model_fields:
            notes.append(
                f"override_settings.{key} does not apply per job: set it with POST /sdapi/v1/options"
            )
        else:
            raise invalid(("override_settings", key), "unknown setting", value)
    return vae, notes


def to_engine_request(
    request: Txt2ImgRequest, engine: Any, *, allow_urls: bool, img2img: bool
) -> EngineRequest:
    cls = Img2ImgParams if img2img else GenerationParams
    params, vae, notes = to_params(request, engine, cls)
    out = EngineRequest(params=params, vae=vae, notes=notes)
    scripts = dict(request.alwayson_scripts or {})
    for key in CONTROLNET_KEYS:
        if key in scripts:
            out.control = _control_units(scripts.pop(key), allow_urls) or None
    for key, body in scripts.items():
        name, values = _extension_values(engine, key, body)
        out.extension_args[name] = values
    if request.script_name:
        kind = "img2img" if img2img else "txt2img"
        title, values = _script(engine, request.script_name, request.script_args, kind)
        out.script = ScriptCall(title, values)
    if img2img:
        assert isinstance(request, Img2ImgRequest)
        if not request.init_images:
            raise invalid(("init_images",), "give at least one picture (base64)")
        pictures = [_picture(("init_images", i), v, allow_urls) for i, v in enumerate(request.init_images)]
        mask = _picture(("mask",), request.mask, allow_urls) if request.mask else None
        out.inputs = Img2ImgInputs(pictures, mask)
        if mask is None:
            out.params = out.params.without_mask_options()
    return out


def _picture(path: tuple[Any, ...], value: Any, allow_urls: bool) -> Any:
    if not isinstance(value, str):
        raise invalid(path, "must be a base64 string or a data URL", type(value).__name__)
    try:
        return decode_image(value, allow_urls=allow_urls)
    except ValueError as exc:
        raise invalid(path, str(exc)) from None


# -- alwayson_scripts ---------------------------------------------------------------------------
def _args_of(body: Any) -> Any:
    """A1111 sends {"args": [...]}; a bare list or object is accepted too."""
    return body.get("args", body) if isinstance(body, dict) else body


def _control_units(body: Any, allow_urls: bool) -> list[ControlInput]:
    units = _args_of(body)
    if not isinstance(units, list):
        raise invalid(("alwayson_scripts", "controlnet", "args"), "must be a list of units")
    inputs = []
    for i, unit in enumerate(units):
        path = ("alwayson_scripts", "controlnet", "args", i)
        if not isinstance(unit, dict):
            raise invalid(path, "a unit must be an object")
        image = unit.get("image") or unit.get("input_image")
        if isinstance(image, dict):  # the extension's {"image": b64, "mask": b64} form
            image = image.get("image")
        try:
            control = ControlNetUnit(
                enabled=bool(unit.get("enabled", True)),
                module=_module(unit.get("module") or "none"),
                model=unit.get("model") or "None",
                weight=unit.get("weight", 1.0),
                guidance_start=unit.get("guidance_start", 0.0),
                guidance_end=unit.get("guidance_end", 1.0),
                control_mode=_choice(unit.get("control_mode", 0), CONTROL_MODES),
                resize_mode=_choice(unit.get("resize_mode", 1), RESIZE_MODES),
                pixel_perfect=bool(unit.get("pixel_perfect", False)),
                processor_res=unit.get("processor_res", 512) if unit.get("processor_res", 512) > 0 else 512,
                threshold_a=unit.get("threshold_a")
                if unit.get("threshold_a", -1) not in (-1, None)
                else None,
                threshold_b=unit.get("threshold_b")
                if unit.get("threshold_b", -1) not in (-1, None)
                else None,
                hr_option=_choice(unit.get("hr_option", 0), HR_OPTIONS),
            )
        except (ValidationError, ValueError, TypeError) as exc:
            raise invalid(path, f"bad ControlNet unit: {exc}") from None
        picture = _picture((*path, "image"), image, allow_urls) if image else None
        inputs.append(ControlInput(control, picture))
    return inputs


def _module(name: Any) -> Any:
    """A preprocessor as the ControlNet extension's clients name it (any case, or its alias)."""
    return (canonical_name(name) or name) if isinstance(name, str) else name


def _choice(value: Any, choices: tuple[str, ...]) -> str:
    """The extension accepts a choice's name or its index."""
    if isinstance(value, int) and 0 <= value < len(choices):
        return choices[value]
    for choice in choices:
        if str(value).lower() == choice.lower():
            return choice
    raise ValueError(f"{value!r} is not one of {', '.join(choices)}")


def _extension_values(engine: Any, key: str, body: Any) -> tuple[str, dict[str, Any]]:
    """An extension's accordion values, by extension name or accordion title (any case); a list is
    taken in the order of the panel's argument model."""
    for accordion in engine.extensions.accordions:
        if key.lower() in (accordion.extension.lower(), accordion.title.lower()):
            try:
                return accordion.extension, declared_values(accordion.args, _args_of(body))
            except ArgsError as exc:
                where = ("alwayson_scripts", key, "args", *((exc.field,) if exc.field else ()))
                raise invalid(where, exc.message) from None
    raise invalid(("alwayson_scripts", key), "no loaded extension has this name (GET /sdapi/v1/scripts)")


def _script(engine: Any, title: str, args: Any, kind: str) -> tuple[str, dict[str, Any]]:
    try:
        script = engine.extensions.script(title)
    except ValueError as exc:
        raise invalid(("script_name",), str(exc), title) from None
    if kind not in script.tabs:
        raise invalid(("script_name",), f"{script.title} does not run in {kind}", title)
    try:
        return script.title, declared_values(script.args, args)
    except ArgsError as exc:
        raise invalid(("script_args", *((exc.field,) if exc.field else ())), exc.message) from None


def declared_values(model: Any, values: Any) -> dict[str, Any]:
    """Values by name, validated by the contribution's argument model (a list in its order, or an
    object). Without a model there is no order to read a list by: only an object is taken."""
    if model is not None:
        return arg_values(model, values)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ArgsError(None, "this extension declares no argument order: send an object of name: value")
    return dict(values)


# -- responses ----------------------------------------------------------------------------------
def generation_response(request: Txt2ImgRequest, result: Any, notes: list[str]) -> dict[str, Any]:
    """A1111's {images, parameters, info}: info is a JSON string whose `infotexts` hold each
    picture's parameters text (also written into each PNG)."""
    params = result.params
    images = None
    if request.send_images:
        images = [
            encode_image(im, infotext=text) for im, text in zip(result.images, result.infotexts, strict=True)
        ]
    info = {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "seed": params.seed,
        "all_seeds": list(result.seeds),
        "subseed": params.subseed,
        "subseed_strength": params.subseed_strength,
        "width": params.width,
        "height": params.height,
        "sampler_name": params.sampler_name,
        "scheduler": params.scheduler,
        "cfg_scale": params.cfg_scale,
        "steps": params.steps,
        "batch_size": params.batch_size,
        "n_iter": params.n_iter,
        "denoising_strength": getattr(params, "denoising_strength", None),
        "styles": list(params.styles),
        "infotexts": list(result.infotexts),
        "index_of_first_image": 0,
        "interrupted": bool(result.interrupted),
        "notes": [*notes, *result.notes],
        "version": "atelier",
    }
    parameters = request.model_dump()
    # A field the client left out shows what the job ran with (the schema's default, the Settings',
    # the checkpoint's preferences), not the request model's placeholder.
    used = params.model_dump()
    for name in parameters.keys() - request.model_fields_set:
        if name in used:
            parameters[name] = used[name]
    for heavy in ("init_images", "mask"):  # A1111 answers with the request minus its pictures
        if heavy in parameters:
            parameters[heavy] = None
    return {"images": images, "parameters": parameters, "info": json.dumps(info, ensure_ascii=False)}
