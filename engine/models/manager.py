"""Keeps exactly one checkpoint in memory and switches between them on request.

SD checkpoints are 2–7 GB; two resident at once is what runs consumer machines out of memory, so
switching frees the old model before loading the new one, then returns freed memory to the OS
(gc, CUDA cache, glibc `malloc_trim`) so RSS does not creep up over a session of switches.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from engine.models import configs
from engine.models.detect import V_PREDICTION, prediction_from_yaml
from engine.models.families import SD1, family, family_of_keys
from engine.models.hashing import HashCache
from engine.models.memory_plan import (
    PLANS,
    Footprint,
    PlanChoice,
    choose_plan,
    free_bytes,
    job_parts,
    plannable_free,
)
from engine.models.paths import APP_ROOT, default_cache_dir, sidecar_config_dir
from engine.models.registry import checkpoint_dirs, scan_checkpoints, scan_vaes, vae_dirs
from engine.models.residency import Residency
from engine.models.speed import enable_tf32
from engine.models.state_dict import read_key_shapes
from engine.models.types import CheckpointInfo, LoadedModel, VaePolicy

log = logging.getLogger(__name__)

BUILTIN_NAME = "atelier-tiny"
VAE_AUTOMATIC, VAE_NONE = "Automatic", "None"
_TITLE_WITH_HASH = re.compile(r"^(.*) \[([0-9a-f]{8,64})\]$")
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """auto → cuda, then mps, then cpu. An explicit device that is not there is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("--device mps was asked for, but MPS is not available")
    return device


def resolve_dtypes(
    precision: str, device: torch.device, no_half_vae: bool = False
) -> tuple[torch.dtype, torch.dtype]:
    """(model dtype, VAE dtype). auto: fp16 on cuda/mps, fp32 on cpu (CPU half math is slow and
    partly unsupported). `no_half_vae` keeps the VAE in fp32, where SD's VAE overflows less."""
    if precision == "auto":
        dtype = torch.float16 if device.type in ("cuda", "mps") else torch.float32
    elif precision in _PRECISIONS:
        dtype = _PRECISIONS[precision]
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("--precision bf16: this GPU has no bfloat16 (before Ampere); use fp16")
    else:
        raise ValueError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return dtype, (torch.float32 if no_half_vae else dtype)


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_memory(device: torch.device | None = None) -> None:
    """Hand freed memory back: Python cycles, the caching allocator of `device` (CUDA, MPS), glibc's
    heap."""
    gc.collect()
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if device is not None and device.type == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # glibc keeps freed tensor buffers in its arenas otherwise; RSS would only grow


class ModelManager:
    """The one loaded checkpoint, plus the lists of checkpoints and VAEs on disk. Thread-safe."""

    def __init__(
        self,
        *,
        root: Path | None = None,
        extra_dirs: Sequence[Path] = (),
        cache_dir: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        no_half_vae: bool = False,
    ):
        self.root = Path(root) if root else APP_ROOT
        self.extra_dirs = [Path(d) for d in extra_dirs]
        self.device = resolve_device(device)
        self.dtype, self.vae_dtype = resolve_dtypes(precision, self.device, no_half_vae)
        enable_tf32(self.device)
        self.vae_policy = VaePolicy()  # every model handed out shares it; the engine sets it from Settings
        self.hashes = HashCache(
            (Path(cache_dir) if cache_dir else default_cache_dir(self.root)) / "hashes.json"
        )
        self._lock = threading.RLock()
        self._current: LoadedModel | None = None
        self._refiner: LoadedModel | None = None  # the SDXL refiner beside it, kept between jobs
        self._checkpoints: list[CheckpointInfo] | None = None
        self._vaes: list[Path] | None = None
        self.last_plan: PlanChoice | None = None  # the memory plan of the latest job
        self._lighter = 0  # automatic plans skipped after out-of-memory errors on this checkpoint

    # -- listing ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            self._checkpoints = scan_checkpoints(checkpoint_dirs(self.root, self.extra_dirs))
            self._vaes = scan_vaes(vae_dirs(self.root, self.extra_dirs))

    def list_checkpoints(self) -> list[CheckpointInfo]:
        with self._lock:
            if self._checkpoints is None:
                self.refresh()
            return list(self._checkpoints or [])

    def list_vaes(self) -> list[Path]:
        with self._lock:
            if self._vaes is None:
                self.refresh()
            return list(self._vaes or [])

    def builtin_title(self) -> str:
        return BUILTIN_NAME

    def find(self, title: str) -> CheckpointInfo:
        """By title/name, A1111's "name [hash]", file name, stem, or a hash already computed."""
        infos = self.list_checkpoints()
        if not infos:
            raise ValueError("no checkpoints found: put a .safetensors file in models/Stable-diffusion")
        wanted = title.strip()
        match = _TITLE_WITH_HASH.match(wanted)
        if match:
            wanted = match.group(1)
        for test in (
            lambda i: i.title == wanted or i.name == wanted,
            lambda i: i.path.name == wanted or i.path.stem == wanted,
            lambda i: i.name.rsplit("/", 1)[-1] == wanted,
        ):
            for info in infos:
                if test(info):
                    return info
        if re.fullmatch(r"[0-9a-f]{8,64}", wanted):
            for info in infos:
                if info.format != "diffusers" and self.hashes.is_cached(info.path):
                    if self.hashes.file_sha256(info.path).startswith(wanted):
                        return info
        names = ", ".join(i.title for i in infos[:20])
        raise ValueError(f"checkpoint {title!r} not found. Available: {names}")

    def find_vae(self, name: str) -> Path:
        for path in self.list_vaes():
            if name in (path.name, path.stem):
                return path
        raise ValueError(f"VAE {name!r} not found in models/VAE")

    def _automatic_vae(self, info: CheckpointInfo) -> Path | None:
        """A1111's "Automatic": `<stem>.vae.{pt,ckpt,safetensors}` beside the checkpoint, else none."""
        if info.format == "diffusers":
            return None
        for suffix in (".vae.safetensors", ".vae.pt", ".vae.ckpt"):
            candidate = info.path.with_name(info.path.stem + suffix)
            if candidate.is_file():
                return candidate
        return None

    def _resolve_vae(self, info: CheckpointInfo, vae: str | None) -> Path | None:
        if vae in (None, "", VAE_AUTOMATIC):
            return self._automatic_vae(info)
        if vae == VAE_NONE:
            return None
        return self.find_vae(vae)

    # -- loading ----------------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self, title: str | None = None, vae: str | None = None, *, check_vae: bool = True) -> LoadedModel:
        """The loaded model for `title` (default: the current one, else the built-in, else the first
        listed), loading it and unloading the previous one when needed.

        `vae`: "Automatic" (`<stem>.vae.*` beside the checkpoint, else its own VAE), "None" (the
        checkpoint's own), or a file name/stem from models/VAE. None means no preference: the
        loaded model keeps the VAE it has, a fresh load uses "Automatic". Pass the `sd_vae`
        setting on every call where the setting should be enforced. `check_vae`: refuse a VAE that
        does not decode the checkpoint's latents (engine.models.vae_probe), with a ValueError.
        """
        from engine.models.loaders import load_checkpoint

        with self._lock:
            info = self._pick(title)
            current = self._current
            same = current is not None and current.info.path == info.path and current.info.mtime == info.mtime
            if current is not None and same and vae is None:
                return current
            vae_path = self._resolve_vae(info, vae)
            if current is not None and same:
                wanted_vae = vae_path.name if vae_path else None
                if current.vae_name == wanted_vae:
                    return current
                if vae_path is not None and current.config_dir is not None:
                    self._current = self._with_vae(current, vae_path, check_vae)
                    return self._current
                # back to the checkpoint's own VAE: its weights are in the checkpoint, so reload
            del current  # a live local reference would keep the old weights alive through unload()
            self.unload()
            storage = self.load_target(info)
            log.info(
                "loading checkpoint %s (%s, %s, weights in %s)", info.title, self.device, self.dtype, storage
            )
            self._lighter = 0
            self._current = load_checkpoint(
                info,
                self.device,
                self.dtype,
                self.vae_dtype,
                vae_path,
                hashes=self.hashes,
                check_vae=check_vae,
                vae_policy=self.vae_policy,
                storage=storage,
            )
            return self._current

    def get_refiner(self, title: str) -> LoadedModel:
        """The refiner checkpoint `title`, loaded beside the current model and kept for the next
        job (A1111 swaps the two on every job; keeping both costs memory but no reloads). The
        current model itself when it is the same file."""
        from engine.models.loaders import load_checkpoint

        with self._lock:
            info = self.find(title)
            current = self._current
            if current is not None and current.info.path == info.path:
                return current
            held = self._refiner
            if held is not None and held.info.path == info.path and held.info.mtime == info.mtime:
                return held
            del held
            self.unload_refiner()
            # Where it does not fit beside the model, the refiner waits in RAM and the job's memory
            # plan brings its parts to the device in their turn, as A1111 swaps the checkpoints.
            storage = self.load_target(info)
            log.info(
                "loading refiner %s (%s, %s, weights in %s)", info.title, self.device, self.dtype, storage
            )
            self._refiner = load_checkpoint(
                info,
                self.device,
                self.dtype,
                self.vae_dtype,
                self._automatic_vae(info),
                hashes=self.hashes,
                vae_policy=self.vae_policy,
                storage=storage,
            )
            return self._refiner

    def load_target(self, info: CheckpointInfo) -> torch.device:
        """Where a checkpoint's weights go when it loads: the device when the file fits its free
        memory (beside what is loaded already), with room for the activations of a 1024² step
        (about 1.5 GiB at fp16); else RAM, and each job's memory plan moves the parts. Loading
        straight onto a 4 GB card would fail before any plan could help."""
        if self.device.type != "cuda":
            return self.device  # RAM or unified memory: nothing to choose
        fits = free_bytes(self.device) > info.size_bytes * 1.1 + 1.5 * 2**30
        return self.device if fits else torch.device("cpu")

    # -- memory plan ------------------------------------------------------------------------------
    def plan_job(
        self,
        model: LoadedModel,
        width: int,
        height: int,
        batch: int,
        forced: str | None = None,
        extra_unet_bytes: int = 0,
        refiner: LoadedModel | None = None,
    ) -> PlanChoice:
        """Place `model`'s parts for a job of this size (engine.models.memory_plan): the plan
        `forced` names, else the heaviest that fits the free memory, counting what the model
        itself holds on the device now as free (its parts can be rearranged). `extra_unet_bytes`:
        what runs beside the UNet at every step (the job's ControlNets; the pipeline adds them to
        the UNet's group when it loads them). `refiner`: the job's refiner, planned with it."""
        with self._lock:
            if model.residency is None:
                model.residency = Residency(model.device)
            refiner = refiner if refiner is not model else None
            free = plannable_free(model, refiner)
            footprint = Footprint.of(model, width, height, batch, extra_unet_bytes)
            if refiner is not None:
                footprint = footprint.with_refiner(Footprint.of(refiner, width, height, batch))
            choice = choose_plan(free, footprint, forced, self._lighter)
            model.residency.apply(choice.plan, job_parts(model, refiner))
            self.last_plan = choice
            return choice

    def after_out_of_memory(self) -> None:
        """The automatic plan goes one step lighter for the next job on this checkpoint."""
        with self._lock:
            self._lighter = min(self._lighter + 1, len(PLANS) - 1)

    def unload_refiner(self) -> None:
        with self._lock:
            if self._refiner is None:
                return
            self._refiner = None
            current = self._current
            if current is not None and current.residency is not None:  # its plan holds the parts
                current.residency.apply(current.residency.plan, current.part_groups())
            release_memory(self.device)

    def _pick(self, title: str | None) -> CheckpointInfo:
        if title:
            return self.find(title)
        if self._current is not None:
            return self._current.info
        infos = self.list_checkpoints()
        if not infos:
            raise ValueError("no checkpoints found: put a .safetensors file in models/Stable-diffusion")
        return next((i for i in infos if i.name == BUILTIN_NAME), infos[0])

    def _with_vae(self, model: LoadedModel, vae_path: Path, check: bool) -> LoadedModel:
        """A new LoadedModel sharing UNet and text encoder but with another VAE. A new object
        rather than a mutation, so a job still holding the old one keeps a consistent model."""
        from engine.models.loaders import finish_module, load_vae_file

        assert model.config_dir is not None
        vae = load_vae_file(vae_path, model.config_dir, torch.float32)  # fp32 on the CPU for the probe
        if check and model.latent_probe is not None:
            model.latent_probe.check(vae, vae_path.name, model.info.title)
        vae = finish_module(vae, model.device, model.vae_dtype)
        swapped = dataclasses.replace(model, vae=vae, vae_name=vae_path.name)
        del model
        release_memory(self.device)
        return swapped

    def unload(self) -> None:
        """Free the loaded model (and a refiner held beside it)."""
        with self._lock:
            if self._current is None and self._refiner is None:
                return
            self._current = self._refiner = None
            release_memory(self.device)

    def vae_fp32(self) -> Any:
        """The current VAE in fp32 for the NaN fallback: itself when already fp32, else a copy (the
        half one stays in place). Callers may instead `.to(torch.float32)` it in place."""
        with self._lock:
            if self._current is None:
                raise ValueError("no model is loaded")
            vae = self._current.vae
            if self._current.vae_dtype == torch.float32:
                return vae
            return torch.nn.Module.to(copy.deepcopy(vae), dtype=torch.float32)  # (diffusers .to() warns)

    # -- metadata without loading -----------------------------------------------------------------
    def native_size_of(self, title: str) -> int:
        """The training resolution (px) of a checkpoint, read from configs/header where possible."""
        info = self.find(title)
        loaded = self._loaded(info)
        if loaded is not None:
            return loaded.native_size
        folder = info.path if info.format == "diffusers" else sidecar_config_dir(info.path)
        if folder is None:
            name = self.family_of(title)
            if family(name).latents == "sd" and prediction_from_yaml(info.path) == V_PREDICTION:
                return 768  # SD2's 768-v; an SD2-v file without yaml is only known after loading
            folder = configs.configs_root() / family(name).config
        network = "transformer" if (folder / "transformer" / "config.json").is_file() else "unet"
        sample_size = configs.component_config(folder, network).get("sample_size")
        if sample_size is None:  # Flux's transformer config does not say it
            return int(family(self.family_of(title)).native_size or 1024)
        vae = configs.component_config(folder, "vae")
        return int(sample_size) * 2 ** (len(vae["block_out_channels"]) - 1)

    def family_of(self, title: str) -> str:
        """A checkpoint's family without loading it: the loaded model's, a diffusers folder's
        configs, or the key names in a .safetensors header (a .ckpt pickle counts as SD 1.x
        until it is loaded: reading its keys means unpickling it)."""
        info = self.find(title)
        loaded = self._loaded(info)
        if loaded is not None:
            return loaded.family
        if info.format == "diffusers":
            return configs.diffusers_family(info.path)
        if info.format != "safetensors":
            return SD1
        try:
            return family_of_keys(read_key_shapes(info.path)).name
        except Exception:  # a broken file: loading it says why
            return SD1

    def _loaded(self, info: CheckpointInfo) -> LoadedModel | None:
        """The loaded model (current or refiner) of this file, if any: it answers without a read."""
        held = (m for m in (self._current, self._refiner) if m is not None)
        return next((m for m in held if m.info.path == info.path), None)

    def proposal_of(self, title: str) -> dict[str, float]:
        """What a checkpoint proposes for the generation tabs beyond its size, read without
        loading it: {"cfg_scale": …, "steps": …} where its family says (Flux); {} otherwise."""
        spec = family(self.family_of(title))
        proposal: dict[str, float] = {}
        if spec.proposed_cfg is not None:
            proposal["cfg_scale"] = spec.proposed_cfg
        if spec.step_distilled_steps is not None and not self._takes_guidance(title):
            proposal["steps"] = spec.step_distilled_steps
        return proposal

    def _takes_guidance(self, title: str) -> bool:
        info = self.find(title)
        loaded = self._loaded(info)
        if loaded is not None:
            return loaded.takes_guidance
        config = info.path / "transformer" / "config.json"
        return (
            info.format == "diffusers"
            and config.is_file()
            and bool(configs.read_json(config).get("guidance_embeds"))
        )

    def size_choices(self, title: str) -> tuple[int, list[tuple[int, int]]]:
        """(the size a checkpoint proposes, the (width, height) choices of its family's picker)."""
        native = self.native_size_of(title)
        return native, family(self.family_of(title)).sizes(native)
