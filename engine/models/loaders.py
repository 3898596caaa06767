"""Checkpoint → LoadedModel. Loaders are chosen by format; family comes from the weights' keys.

Single files (.safetensors / .ckpt) are read once by our own safe reader and handed to diffusers'
per-component single-file converters as a dict, with `config=` a local diffusers config folder and
`local_files_only=True`, so nothing ever reaches for the hub:
  UNet2DConditionModel.from_single_file(state, config=DIR, subfolder="unet", ...)
  AutoencoderKL.from_single_file(state, config=DIR, subfolder="vae", ...)
  create_diffusers_clip_model_from_ldm(CLIPTextModel, state, config=DIR, subfolder="text_encoder", ...)
(the last is what diffusers' own pipeline `from_single_file` calls for CLIP; there is no public
per-model entry point for transformers models). Diffusers folders use `from_pretrained`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from engine.models import configs
from engine.models.detect import (
    EPSILON,
    FLOW_PREDICTION,
    V_PREDICTION,
    ModelTraits,
    detect_traits,
    looks_like_v_prediction,
    prediction_from_yaml,
)
from engine.models.families import SD2, EncoderSlot, family
from engine.models.hashing import HashCache
from engine.models.paths import sidecar_config_dir
from engine.models.state_dict import load_state_dict
from engine.models.tokenizer import load_clip_tokenizer, load_t5_tokenizer, tokenizer_folder
from engine.models.types import CheckpointInfo, LoadedModel, VaePolicy
from engine.models.vae_probe import LatentProbe

log = logging.getLogger(__name__)

# Training-only or unused weights some VAE files carry (LPIPS discriminator, EMA copies).
_VAE_DROP_PREFIXES = ("loss.", "model_ema.")


@dataclass(frozen=True)
class _Plan:
    """What a single file is and which config folder builds it."""

    traits: ModelTraits
    config_dir: Path
    prediction_type: str | None  # None: decide with the UNet heuristic once it is loaded
    is_sidecar: bool


def _plan_single_file(path: Path, state: dict[str, torch.Tensor]) -> _Plan:
    traits = detect_traits(state, path.name)
    from_yaml = prediction_from_yaml(path) or traits.prediction_type
    sidecar = sidecar_config_dir(path)
    if sidecar is not None:
        prediction = from_yaml or configs.prediction_type_of(configs.scheduler_config(sidecar))
        return _Plan(traits, sidecar, prediction, True)
    if traits.family != SD2:  # one architecture; a yaml or `v_pred` key may declare a v finetune
        return _Plan(traits, configs.shipped_config_dir(traits.family), from_yaml or EPSILON, False)
    # SD2: the yaml decides; without one the UNet probe does (prediction None), after loading
    # with the 512-base config (the 768-v config differs only in scheduler and sample size).
    return _Plan(traits, configs.shipped_config_dir(SD2, from_yaml or EPSILON), from_yaml, False)


def _cast(module: Any, dtype: torch.dtype) -> Any:
    """Cast through torch's own `Module.to`: diffusers' override logs a "keep in float32" warning
    on every dtype cast (even with no such modules), and diffusers' loaders cast whenever given
    `torch_dtype` - so diffusers models are loaded with torch_dtype=None and cast here."""
    if next(module.parameters()).dtype != dtype:
        torch.nn.Module.to(module, dtype=dtype)
    return module


def finish_module(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Cast, move, eval mode, no grads: the state every loaded component is handed out in."""
    _cast(module, dtype)
    torch.nn.Module.to(module, device=device)
    module.eval()
    module.requires_grad_(False)
    return module


def load_vae_file(vae_path: Path, config_dir: Path, dtype: torch.dtype = torch.float32) -> Any:
    """A standalone VAE file (SD key layout, `first_stage_model.` prefix optional, or diffusers
    layout) built with the checkpoint's own VAE config."""
    from diffusers import AutoencoderKL

    state = {k: v for k, v in load_state_dict(vae_path).items() if not k.startswith(_VAE_DROP_PREFIXES)}
    try:
        vae = AutoencoderKL.from_single_file(
            state, config=str(config_dir), subfolder="vae", local_files_only=True
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ValueError(f"{vae_path.name} is not a VAE matching this checkpoint: {exc}") from exc
    return _cast(vae, dtype)


def _text_encoder_class(slot: EncoderSlot) -> Any:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    if slot.kind == "t5":
        return T5EncoderModel
    return CLIPTextModelWithProjection if slot.with_projection else CLIPTextModel


def _network_class(name: str, folder: Path) -> tuple[Any, str]:
    """(class, subfolder) of a diffusers folder's denoising network, by the family's `network`."""
    network = family(name).network
    if network == "sd3":
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel, "transformer"
    if network == "flux":
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel, "transformer"
    from engine.models.coord_unet import unet_class_for_config

    return unet_class_for_config(configs.component_config(folder, "unet")), "unet"


def _load_single_file(info: CheckpointInfo, dtype: torch.dtype) -> tuple[dict[str, Any], Path]:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    from engine.models.coord_unet import unet_class_for_config

    state = load_state_dict(info.path)
    plan = _plan_single_file(info.path, state)
    cfg = str(plan.config_dir)  # diffusers rejects a Path for config=
    common: dict[str, Any] = {"config": cfg, "local_files_only": True}
    unet_overrides: dict[str, Any] = {}
    if not plan.is_sidecar and plan.traits.unet_in_channels != 4:
        unet_overrides["in_channels"] = plan.traits.unet_in_channels  # inpainting on a shipped config
    try:
        unet_cls = unet_class_for_config(configs.component_config(plan.config_dir, "unet"))
        unet = unet_cls.from_single_file(state, subfolder="unet", **common, **unet_overrides)
        vae = AutoencoderKL.from_single_file(state, subfolder="vae", **common)
        encoders = {}
        for slot in family(plan.traits.family).encoders:
            # Only this encoder's keys: diffusers picks the conversion by the keys it finds, and
            # two encoders of one width (small test models) would otherwise look alike.
            part = {k: v for k, v in state.items() if k.startswith(slot.ldm_prefix)}
            encoders[slot.component] = create_diffusers_clip_model_from_ldm(
                _text_encoder_class(slot), part, subfolder=slot.component, torch_dtype=dtype, **common
            )
    except (RuntimeError, KeyError, ValueError) as exc:  # shape mismatches, missing keys
        arch = f"the {family(plan.traits.family).label} architecture in {plan.config_dir}"
        raise ValueError(f"{info.path.name} does not match {arch}: {exc}") from exc
    finally:
        del state
    config_dir = plan.config_dir
    prediction = plan.prediction_type
    if prediction is None:
        # fp32 like A1111's probe; the later cast to `dtype` is exact (fp16/bf16 ⊂ fp32)
        prediction = V_PREDICTION if looks_like_v_prediction(_cast(unet, torch.float32)) else EPSILON
        log.info("%s: no yaml, UNet probe says %s", info.name, prediction)
        if prediction == V_PREDICTION:
            config_dir = configs.shipped_config_dir(SD2, V_PREDICTION)
            unet.register_to_config(sample_size=configs.component_config(config_dir, "unet")["sample_size"])
    scheduler = configs.scheduler_config(config_dir)
    if plan.traits.zero_terminal_snr:
        scheduler = {**scheduler, "rescale_betas_zero_snr": True}
    components = {
        "unet": unet,
        "vae": vae,
        **encoders,
        "family": plan.traits.family,
        "prediction_type": prediction,
        "scheduler": scheduler,
    }
    return components, config_dir


def _load_diffusers_folder(info: CheckpointInfo, dtype: torch.dtype) -> tuple[dict[str, Any], Path]:
    from diffusers import AutoencoderKL

    folder = info.path
    scheduler = configs.scheduler_config(folder)
    try:
        name = configs.diffusers_family(folder)
        if family(name).flow:
            prediction = FLOW_PREDICTION
        else:
            from_yaml = prediction_from_yaml(folder.with_name(folder.name + ".yaml"))
            prediction = from_yaml or configs.prediction_type_of(scheduler)
        network_cls, subfolder = _network_class(name, folder)
        unet = _from_pretrained(network_cls, folder, subfolder)
        vae = _from_pretrained(AutoencoderKL, folder, "vae")
        encoders = {
            slot.component: _from_pretrained(_text_encoder_class(slot), folder, slot.component)
            for slot in family(name).encoders
            if slot.kind != "t5" or (folder / slot.component / "config.json").is_file()
        }  # an SD 3 folder may come without T5 (its tokens are then zeros)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot load diffusers folder {folder.name}: {exc}") from exc
    components = {
        "unet": unet,
        "vae": vae,
        **encoders,
        "family": name,
        "prediction_type": prediction,
        "scheduler": scheduler,
    }
    return components, folder


def _from_pretrained(cls: Any, folder: Path, subfolder: str) -> Any:
    """Loaded in the stored dtype and cast later (see `_cast`). Folders that only ship
    `*.fp16.safetensors` weights (a common download) need `variant="fp16"`."""
    try:
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True)
    except OSError:
        if not any((folder / subfolder).glob("*.fp16.*")):
            raise
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, variant="fp16")


@lru_cache(maxsize=2)
def _shared_tokenizer(pad_token: str) -> Any:
    """One tokenizer per pad token for all models: it is read-only in use and the same for every SD."""
    return load_clip_tokenizer(pad_token)


def load_checkpoint(
    info: CheckpointInfo,
    device: torch.device | str,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    vae_path: Path | None = None,
    *,
    hashes: HashCache | None = None,
    check_vae: bool = True,
    vae_policy: VaePolicy | None = None,
    storage: torch.device | None = None,
) -> LoadedModel:
    """Load a checkpoint that computes on `device`, its weights put on `storage` (default: the
    device; RAM where they would not fit it: the job's memory plan then brings each part to the
    device when it runs). Raises ValueError with a readable message for bad files, and
    (`check_vae`) for a `vae_path` that does not decode this checkpoint's latents."""
    device = torch.device(device)
    where = storage or device
    if info.format == "diffusers":
        parts, config_dir = _load_diffusers_folder(info, dtype)
    elif info.format in ("safetensors", "ckpt"):
        parts, config_dir = _load_single_file(info, dtype)
    else:
        raise ValueError(f"unknown checkpoint format {info.format!r}")
    # The own VAE encodes the probe picture once, in fp32 on the CPU before any cast to the VAE
    # dtype (exact both ways for fp16/bf16 weights): later VAE choices are checked against it.
    vae = _cast(parts.pop("vae"), torch.float32)
    probe = LatentProbe.of(vae)
    if vae_path is not None:
        vae = load_vae_file(vae_path, config_dir, torch.float32)
        if check_vae and probe is not None:
            probe.check(vae, vae_path.name, info.title)
    spec = family(parts["family"])
    # flow models have no ᾱ table: their σ's come from the shift (LoadedModel.model_sigmas)
    scheduler = parts["scheduler"]
    alphas_cumprod = torch.empty(0) if spec.flow else configs.alphas_cumprod_from_config(scheduler)
    flow_shift = float(scheduler.get("shift", spec.flow_shift)) if spec.flow else None
    flow_dynamic = None
    if spec.flow and scheduler.get("use_dynamic_shifting"):  # Flux dev: the shift grows with the size
        flow_dynamic = (
            float(scheduler.get("base_shift", 0.5)),
            float(scheduler.get("max_shift", 1.15)),
            int(scheduler.get("base_image_seq_len", 256)),
            int(scheduler.get("max_image_seq_len", 4096)),
        )
    encoders = {}
    for slot in spec.encoders:
        if slot.kind == "t5":  # optional; its tokenizer comes from the user's files
            if parts.get(slot.component) is None:
                continue
            encoders[slot.component] = finish_module(parts[slot.component], where, dtype)
            folder = config_dir / tokenizer_folder(slot.component)
            encoders[tokenizer_folder(slot.component)] = load_t5_tokenizer(folder, spec.label)
            continue
        encoders[slot.component] = finish_module(parts[slot.component], where, dtype)
        encoders[tokenizer_folder(slot.component)] = _shared_tokenizer(slot.pad_token)
    short = (hashes or HashCache(None)).short_hash(info.path)
    return LoadedModel(
        info=info,
        short_hash=short,
        family=parts["family"],
        prediction_type=parts["prediction_type"],
        unet=finish_module(parts["unet"], where, dtype),
        vae=finish_module(vae, where, vae_dtype),
        text_encoder=encoders.get("text_encoder"),
        tokenizer=encoders.get("tokenizer"),
        text_encoder_2=encoders.get("text_encoder_2"),
        tokenizer_2=encoders.get("tokenizer_2"),
        text_encoder_3=encoders.get("text_encoder_3"),
        tokenizer_3=encoders.get("tokenizer_3"),
        alphas_cumprod=alphas_cumprod,
        flow_shift=flow_shift,
        flow_dynamic=flow_dynamic,
        device=device,
        dtype=dtype,
        vae_dtype=vae_dtype,
        vae_name=vae_path.name if vae_path is not None else None,
        config_dir=config_dir,
        latent_probe=probe,
        vae_policy=vae_policy or VaePolicy(),
    )
