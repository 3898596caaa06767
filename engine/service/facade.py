"""The engine facade: the one object the UI and the API talk to.

It owns the settings snapshot, the model manager, the job queue and the one submit path every
generation job takes (`_submit`: the job's extension hooks, or the script that takes it over). It
holds no Gradio and no generation logic of its own: generation is `engine.pipeline`. The picture
tools beside generation are composed services (`engine.service.upscaling`, `engine.service.control`)
that the facade hands their calls to.
"""

from __future__ import annotations

import argparse
import functools
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.conditioning.embeddings import EmbeddingDatabase
from engine.controlnet.models import SUBDIR as CONTROLNET_SUBDIR
from engine.controlnet.models import ControlNetLibrary
from engine.controlnet.units import ControlInput, ControlNetUnit
from engine.models import speed
from engine.models.builtin import builtin_model_path
from engine.models.extra_networks import NetworkCard, list_cards
from engine.models.lora import LoraLibrary
from engine.models.manager import ModelManager
from engine.models.memory_plan import MemoryFlags
from engine.models.paths import APP_ROOT, BUILTIN_SUBDIR, LORA_SUBDIR, models_root
from engine.models.preferences import preferences_or_empty, read_preferences
from engine.pipeline import img2img as img2img_pipeline
from engine.pipeline import stages
from engine.pipeline.hires import target_size as hires_target_size
from engine.pipeline.img2img import Img2ImgInputs
from engine.pipeline.img2img_batch import BatchReport, run_batch
from engine.pipeline.results import GenerationResult
from engine.pipeline.txt2img import txt2img
from engine.plugins.hooks import AppContext, ModelContext, SettingsContext, Stage
from engine.plugins.loader import ExtensionManager
from engine.plugins.script_jobs import ExtensionJobs, ScriptCall
from engine.plugins.scripts import EngineNames
from engine.sampling.registry import sampler_names, schedule_hint, schedule_names
from engine.schema.infotext import build_infotext
from engine.schema.params import GenerationParams, Img2ImgParams, img2img_settings
from engine.schema.sampler_params import A1111_DEFAULTS, resolve_overrides
from engine.schema.settings import Settings, load_settings, save_settings
from engine.schema.styles import Style, StyleFile, with_styles_applied
from engine.service import memory
from engine.service.control import ControlTools
from engine.service.jobs import Job, JobQueue
from engine.service.upscaling import Upscaling
from engine.upscale.extras import ExtrasParams
from engine.upscale.upscalers import LATENT_MODES, UpscalerLibrary

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"
STYLES_FILE = "styles.csv"
EMBEDDINGS_DIR = "embeddings"


class Engine:
    def __init__(
        self,
        *,
        data_dir: Path,
        models_dirs: list[Path] | tuple[Path, ...] = (),
        outdir: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        no_half_vae: bool = False,
        memory_flags: MemoryFlags | None = None,
        controlnet_dir: Path | None = None,
        extensions_dir: Path | None = None,
        load_extensions: bool = True,
        extension_install_allowed: bool = True,
    ):
        self.data_dir = Path(data_dir)
        self.root = APP_ROOT
        self.outdir = Path(outdir) if outdir else None
        self._settings_path = self.data_dir / CONFIG_FILE
        self._settings = load_settings(self._settings_path)
        self._settings_lock = threading.Lock()
        self._styles_lock = threading.Lock()
        builtin_model_path(self.root)  # logs when the install lacks it
        self.models = ModelManager(
            root=self.root,
            extra_dirs=[Path(d) for d in models_dirs],
            cache_dir=self.data_dir / "cache",
            device=device,
            precision=precision,
            no_half_vae=no_half_vae,
        )
        self.memory_flags = memory_flags or MemoryFlags()
        # the device it measures and frees after an out-of-memory; the next automatic plan is lighter
        self.queue = JobQueue(self.models.device, on_out_of_memory=self.models.after_out_of_memory)
        self._embeddings: tuple[Any, EmbeddingDatabase] | None = None  # (folder signature, db)
        self.loras = LoraLibrary(models_root(self.root) / LORA_SUBDIR)
        self.upscalers = UpscalerLibrary(
            models_root(self.root),
            extra_folders=(models_root(self.root) / BUILTIN_SUBDIR / "upscalers",),  # the shipped ones
            device=self.models.device,
            settings=lambda: self._settings,
        )
        self.controlnets = ControlNetLibrary(
            controlnet_dir or models_root(self.root) / CONTROLNET_SUBDIR,
            extra_folders=(
                models_root(self.root) / BUILTIN_SUBDIR / CONTROLNET_SUBDIR,
            ),  # the shipped canny one
        )
        # Picture tools beside generation, composed: each holds what it needs, not the Engine.
        self.upscaling = Upscaling(self.upscalers, self.queue, lambda: self._settings, self._extras_outdir)
        self.control = ControlTools(self.controlnets)
        # The repository's extensions/ holds the built-in ones; users add theirs to
        # <data dir>/extensions (the same folder by default, as in A1111) or --extensions-dir.
        self.extensions_dir = Path(extensions_dir) if extensions_dir else self.data_dir / "extensions"
        self.extension_install_allowed = extension_install_allowed  # False with --listen (cmd_args)
        self.extensions = ExtensionManager(
            [self.root / "extensions", self.extensions_dir], self.data_dir / "extensions.json"
        )
        self.extensions.names_provider = self.engine_names
        if load_extensions:
            self.extensions.load_all()
        self.extension_jobs = ExtensionJobs(self.extensions, self.engine_names)
        self._model_seen: int | None = None
        self._warm_unets: set[int] = set()  # UNets whose compiled first step has run
        self.extensions.registry.run_app(Stage.APP_STARTED, AppContext(self))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Engine:
        data_dir = Path(getattr(args, "data_dir", None) or Path.cwd())
        models_dir = getattr(args, "models_dir", None)
        return cls(
            data_dir=data_dir,
            models_dirs=[Path(models_dir)] if models_dir else [],
            outdir=Path(args.outdir) if getattr(args, "outdir", None) else None,
            device=getattr(args, "device", "auto"),
            precision=getattr(args, "precision", "auto"),
            no_half_vae=getattr(args, "no_half_vae", False),
            memory_flags=MemoryFlags(
                medvram=getattr(args, "medvram", False),
                lowvram=getattr(args, "lowvram", False),
                medvram_sdxl=getattr(args, "medvram_sdxl", False),
                gpu_only=getattr(args, "gpu_only", False),
            ),
            controlnet_dir=getattr(args, "controlnet_dir", None),
            extensions_dir=getattr(args, "extensions_dir", None),
            load_extensions=not getattr(args, "disable_all_extensions", False),
            extension_install_allowed=getattr(args, "extension_install_allowed", True),
        )

    # -- settings ---------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    def update_settings(self, **changes: Any) -> Settings:
        """Validate and persist; a bad value raises ValueError and nothing is saved."""
        with self._settings_lock:
            old = self._settings
            new = Settings.model_validate({**old.model_dump(), **changes})
            save_settings(self._settings_path, new)
            self._settings = new
        changed = [name for name in changes if getattr(old, name) != getattr(new, name)]
        self.extensions.registry.run_app(Stage.SETTINGS_CHANGED, SettingsContext(new, changed))
        return new

    # -- models -----------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[str]:
        return [c.title for c in self.models.list_checkpoints()]

    def has_checkpoint(self, title: str) -> bool:
        """Whether `title` names a checkpoint on disk (a title, file name, or A1111's "name [hash]")."""
        try:
            self.models.find(title)
        except ValueError:
            return False
        return True

    def refresh_checkpoints(self) -> list[str]:
        self.models.refresh()
        return self.list_checkpoints()

    def _default_title(self) -> str:
        titles = self.list_checkpoints()
        wanted = self._settings.sd_checkpoint
        if wanted and wanted in titles:
            return wanted
        builtin = self.models.builtin_title()
        if builtin in titles:
            return builtin
        if not titles:
            raise ValueError("no checkpoints found: put a .safetensors file in models/Stable-diffusion")
        return titles[0]

    def current_checkpoint(self) -> str | None:
        loaded = self.models.current
        return loaded.info.title if loaded else self._default_title()

    def load_checkpoint(self, title: str) -> None:
        """Load `title` and return once it is loaded; raises what the load raised. It waits for
        the jobs queued before it (see submit_load), as A1111's checkpoint switch does."""
        if self.queue.in_worker():  # a job (a script) switching models already runs between jobs
            self.models.get(title)
            return
        self._wait(self.submit_load(title))

    def submit_load(self, title: str) -> Job:
        """Queue loading checkpoint `title` as a job of its own. Loading beside a running job would
        hold two models at once (out of memory on a small GPU): queued, it waits until the jobs
        ahead have ended, and the manager then frees the old model before it loads the new one.
        An unknown title fails now, not after the jobs ahead. The job's result is the loaded
        checkpoint's title, not the model: a Job outlives its run and must not keep weights alive."""
        self.models.find(title)
        return self.queue.submit(Job("load"), self._run_load, title)

    def _run_load(self, title: str, *, job: Job) -> str:
        return self._get_or_restore(title).info.title

    def _get_or_restore(self, title: str, vae: str | None = None, *, check_vae: bool = True) -> Any:
        """`self.models.get(...)`; when the load fails, the checkpoint loaded before is loaded
        again before the error goes on (a job's own checkpoint and the dropdown's alike)."""
        loaded = self.models.current
        previous = loaded.info.title if loaded is not None else None
        del loaded  # a live reference would keep the old weights beside the new ones
        try:
            return self.models.get(title, vae=vae, check_vae=check_vae)
        except memory.OUT_OF_MEMORY_ERRORS:
            raise  # the queue frees what the load held; the next job loads its own checkpoint
        except Exception as exc:
            error = exc
        self._restore_after_failed_load(previous, error)
        raise error

    def _restore_after_failed_load(self, previous: str | None, error: Exception) -> None:
        """The manager frees the old model before it loads the new one, so after a failed load
        (a broken file) none is loaded: load the previous one again, as A1111 does, so the next
        job and the checkpoint dropdown find the model the user had."""
        log.warning("loading a checkpoint failed", exc_info=error)
        _drop_tracebacks(error)  # their frames hold what the failed load had built: free it first
        if previous is None or self.models.current is not None:
            return
        try:
            self.models.get(previous)
        except Exception:  # the original error is the one to report
            log.exception("loading %s again after a failed load failed too", previous)

    def loaded_model(self) -> Any:
        """The loaded checkpoint; when none is, the one jobs would use, loaded through the queue."""
        if self.models.current is None:
            self.load_checkpoint(self.current_checkpoint())
        model = self.models.current
        if model is None:  # a job run right after the load failed to load its own checkpoint
            raise ValueError("no checkpoint is loaded: the last load failed")
        return model

    def preferred_sampler_settings(self, title: str | None = None) -> dict[str, Any]:
        """What checkpoint `title` (default: the current one) prefers for the Sampler settings, from
        the `<stem>.json` beside it; {} when nothing. Raises ValueError for a broken file."""
        return read_preferences(self.models.find(title or self.current_checkpoint()).path)

    def _job_preferences(self, params: GenerationParams) -> dict[str, Any]:
        if not self._settings.use_checkpoint_preferences:
            return {}
        try:
            info = self.models.find(params.checkpoint or self.current_checkpoint())
        except ValueError:  # no such checkpoint: the job itself fails with that message
            return {}
        return preferences_or_empty(info.path)

    def default_size(self) -> int:
        loaded = self.models.current
        if loaded is not None:
            return loaded.native_size
        return self.models.native_size_of(self._default_title())

    def size_choices(self) -> tuple[int, list[tuple[int, int]]]:
        """(the size the current checkpoint proposes, its family's (width, height) picker choices):
        1024² and the SDXL buckets for SDXL, 512² and the same shapes scaled for SD 1.x."""
        return self.models.size_choices(self.current_checkpoint())

    def generation_proposal(self) -> dict[str, float]:
        """The CFG scale and steps the current checkpoint proposes: its family's where it says
        (Flux: CFG 1; schnell: 4 steps), else the Settings' defaults."""
        settings = self._settings
        proposal = {"cfg_scale": settings.default_cfg_scale, "steps": settings.default_steps}
        return {**proposal, **self.models.proposal_of(self.current_checkpoint())}

    def sampler_names(self) -> list[str]:
        return sampler_names()

    def schedule_names(self) -> list[str]:
        return schedule_names()

    def schedule_hint(self, sampler: str) -> str:
        return schedule_hint(sampler)

    def vae_names(self) -> list[str]:
        return ["Automatic", "None", *(p.name for p in self.models.list_vaes())]

    def engine_names(self) -> EngineNames:
        """What scripts may offer in their dropdowns (the X/Y/Z plot's choice axes)."""
        return EngineNames(
            samplers=tuple(self.sampler_names()),
            schedulers=tuple(self.schedule_names()),
            checkpoints=tuple(self.list_checkpoints()),
            vaes=tuple(self.vae_names()),
            hires_upscalers=(*LATENT_MODES, *(n for n in self.upscaler_names() if n != "None")),
            upscalers=tuple(self.upscaler_names()),
        )

    def _model(self, params: GenerationParams, vae: str | None = None) -> Any:
        """The job's checkpoint (loaded when needed); MODEL_LOADED fires when it changes."""
        self.models.vae_policy.tiling = self._settings.vae_tiling
        model = self._get_or_restore(
            params.checkpoint or self.current_checkpoint(),
            vae or self._settings.sd_vae,
            check_vae=self._settings.sd_vae_check_latents,
        )
        options = self._speed_options()
        if speed.needs_reload(model, options):  # FP8 weights off: the full-precision ones again
            self.models.unload()
            del model
            return self._model(params, vae)
        speed.apply(model, options, self.data_dir / "cache")
        if id(model) != self._model_seen:
            self._model_seen = id(model)
            self.controlnets.follow_checkpoint(model.unet)  # cached ControlNets leave the GPU
            self.extensions.registry.run_app(Stage.MODEL_LOADED, ModelContext(model, model.info.title))
        return model

    def _speed_options(self) -> speed.SpeedOptions:
        settings = self._settings
        return speed.SpeedOptions(
            attention=settings.cross_attention_optimization,
            fp8_storage=settings.fp8_storage,
            channels_last=settings.channels_last,
            compile_unet=settings.compile_unet,
        )

    def _note_compiling(self, model: Any, job: Job) -> None:
        """The first job on a freshly compiled UNet spends its first step compiling: say so."""
        if model.speed is not None and model.speed.compiled and id(model.unet) not in self._warm_unets:
            self._warm_unets.add(id(model.unet))
            job.progress.textinfo = "Compiling the UNet: the first job is slow (later starts read the cache)"

    def _plan_memory(
        self, model: Any, params: GenerationParams, control: list[ControlInput] | None, refiner: Any
    ) -> None:
        """Place the model's parts for this job (engine.models.memory_plan): a start flag's plan,
        else the Settings' choice, else the heaviest that fits; sized for the hires pass when there
        is one, counting the job's ControlNets with the UNet and its refiner beside the model."""
        forced = self.memory_flags.forced(is_sdxl=model.spec.latents == "sdxl") or self._settings.memory_plan
        width, height = (params.width, params.height)
        if getattr(params, "enable_hr", False):
            width, height = hires_target_size(params)
        controlnet_bytes = sum(self._controlnet_bytes(c.unit) for c in control or () if c.unit.enabled)
        self.models.plan_job(
            model, width, height, params.batch_size, forced, controlnet_bytes, refiner=refiner
        )

    def _controlnet_bytes(self, unit: ControlNetUnit) -> int:
        """A unit's ControlNet file size (its weights' size); 0 when it names none or a missing one:
        the pipeline reports that with its own message."""
        if unit.model == "None":
            return 0
        try:
            return self.controlnets.find(unit.model).path.stat().st_size
        except (ValueError, OSError):
            return 0

    def memory_plan_text(self) -> str:
        """The memory plan of the latest job, for the Settings tab."""
        plan = self.models.last_plan
        if plan is None:
            return "No job has run yet: the plan is chosen when one starts."
        return plan.describe()

    # -- styles -----------------------------------------------------------------------------------
    def styles(self) -> StyleFile:
        """styles.csv as it is now (re-read each time: users edit it by hand)."""
        return StyleFile.read(self.data_dir / STYLES_FILE)

    def save_style(self, name: str, prompt: str, negative_prompt: str) -> StyleFile:
        with self._styles_lock:  # one writer at a time: read-modify-write of the file
            return self.styles().save(Style(name, prompt, negative_prompt))

    def extra_networks(self) -> list[NetworkCard]:
        """LoRAs in models/Lora and embeddings in <data dir>/embeddings, for the panel."""
        return list_cards(self.loras.folder, self.data_dir / EMBEDDINGS_DIR)

    def count_tokens(self, prompt: str, steps: int, *, is_negative: bool = False) -> tuple[int, int]:
        """(tokens used, limit) for the counter beside a prompt box. Every SD 1.x/2.x model uses
        the same CLIP BPE, so this needs no loaded model (the shared tokenizer loads in ~0.06 s)."""
        from engine.conditioning.schedule import count_prompt_tokens

        loaded = self.models.current  # embeddings count by their vectors once a model says the width
        embeddings = self.embeddings_for(loaded) if loaded is not None else None
        return count_prompt_tokens(prompt, steps, is_negative=is_negative, embeddings=embeddings)

    # -- generation -------------------------------------------------------------------------------
    def _run_txt2img(
        self,
        params: GenerationParams,
        control: list[ControlInput] | None = None,
        *,
        job: Job,
        vae: str | None = None,
        save_images: bool = True,
    ) -> GenerationResult:
        model = self._model(params, vae)
        refiner = self._refiner(params)
        self._plan_memory(model, params, control, refiner)
        self._note_compiling(model, job)
        save = self._save_options("txt2img") if save_images else None
        return txt2img(
            model,
            params,
            job=job,
            save=save,
            embeddings=self.embeddings_for(model),
            loras=self.loras,
            control=control,
            controlnets=self.controlnets,
            upscalers=self.upscalers,
            refiner=refiner,
        )

    def _aesthetic_scores(self) -> tuple[float, float]:
        settings = self._settings
        return settings.sdxl_refiner_high_aesthetic_score, settings.sdxl_refiner_low_aesthetic_score

    def _refiner(self, params: GenerationParams) -> Any:
        """The job's refiner model, loaded beside the checkpoint, or None (freed when unused)."""
        if not params.uses_refiner:
            return None
        return self.models.get_refiner(params.refiner_checkpoint)

    def _save_options(self, kind: str) -> stages.SaveOptions | None:
        settings = self._settings
        if not settings.save_images:
            return None
        if self.outdir:
            return stages.SaveOptions(outdir=self.outdir / f"{kind}-images")
        folder = settings.txt2img_outdir if kind == "txt2img" else settings.img2img_outdir
        return stages.SaveOptions(outdir=folder(self.data_dir))

    def _run_img2img(
        self,
        params: Img2ImgParams,
        inputs: Img2ImgInputs,
        control: list[ControlInput] | None = None,
        *,
        job: Job,
        vae: str | None = None,
        save_images: bool = True,
    ) -> GenerationResult:
        model = self._model(params, vae)
        refiner = self._refiner(params)
        self._plan_memory(model, params, control, refiner)
        self._note_compiling(model, job)
        return img2img_pipeline.img2img(
            model,
            params,
            inputs,
            job=job,
            save=self._save_options("img2img") if save_images else None,
            embeddings=self.embeddings_for(model),
            loras=self.loras,
            control=control,
            controlnets=self.controlnets,
            refiner=refiner,
        )

    def embeddings_for(self, model: Any) -> EmbeddingDatabase:
        """The embeddings in `<data dir>/embeddings` that fit `model`'s text encoder; re-read when a
        file there is added, removed or changed (A1111 also picks up new files without a restart)."""
        folder = self.data_dir / EMBEDDINGS_DIR
        dim = tuple(int(encoder.config.hidden_size) for _, _, encoder in model.text_encoders())
        files = sorted(folder.rglob("*")) if folder.is_dir() else []
        signature = (
            dim,
            tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file()),
        )
        if self._embeddings is None or self._embeddings[0] != signature:
            self._embeddings = (signature, EmbeddingDatabase.load(folder, dim))
        return self._embeddings[1]

    def _resolved(self, params: GenerationParams, *, for_script: bool = False) -> GenerationParams:
        # Unset sampler parameters take the Sampler settings values now, so the job (and its
        # infotext) keeps them even if the settings change while it waits in the queue.
        # `for_script`: a script (X/Y/Z plot) may switch checkpoints per cell, so the parameters a
        # checkpoint's preference could fill (setting at A1111's default) stay unset here and
        # each cell's own resolution fills them for the cell's checkpoint.
        settings = self._settings
        update = resolve_overrides(params, settings, {} if for_script else self._job_preferences(params))
        if for_script:
            update = {k: v for k, v in update.items() if v != A1111_DEFAULTS[k]}
        params = params.model_copy(update=update)
        if isinstance(params, Img2ImgParams):
            params = params.model_copy(update=img2img_settings(params, settings))
        return with_styles_applied(params, self.styles())  # unknown names raise ValueError

    def submit_txt2img(
        self,
        params: GenerationParams,
        control: list[ControlInput] | None = None,
        *,
        extension_args: Mapping[str, Mapping[str, Any]] | None = None,
        script: ScriptCall | None = None,
        vae: str | None = None,
        save_images: bool = True,
    ) -> Job:
        """A txt2img job; `control`: ControlNet units with their pictures; `extension_args`: the
        extensions' values for this job ({name: {field: value}}); `script`: a script that takes
        the job over (X/Y/Z plot, ...); `vae`: this job's VAE (None: the Settings' choice);
        `save_images`: False keeps the pictures out of the output folders (the API's default)."""
        job = Job("txt2img", self._settings.show_progress_every_n_steps, self._settings.show_progress_type)
        job.aesthetic_scores = self._aesthetic_scores()
        run = functools.partial(self._run_txt2img, vae=vae, save_images=save_images)
        resolved = self._resolved(params, for_script=script is not None)
        return self._submit(job, "txt2img", run, resolved, (control,), extension_args, script)

    def submit_img2img(
        self,
        params: Img2ImgParams,
        inputs: Img2ImgInputs,
        control: list[ControlInput] | None = None,
        *,
        extension_args: Mapping[str, Mapping[str, Any]] | None = None,
        script: ScriptCall | None = None,
        vae: str | None = None,
        save_images: bool = True,
    ) -> Job:
        """img2img, sketch and inpainting jobs; the Outpainting and SD upscale scripts take an
        img2img job over like any script. A ControlNet unit without a picture uses the img2img
        picture. The other arguments: as submit_txt2img's."""
        job = Job("img2img", self._settings.show_progress_every_n_steps, self._settings.show_progress_type)
        job.aesthetic_scores = self._aesthetic_scores()
        run = functools.partial(self._run_img2img, vae=vae, save_images=save_images)
        resolved = self._resolved(params, for_script=script is not None)
        return self._submit(job, "img2img", run, resolved, (inputs, control), extension_args, script)

    def _submit(self, job, kind, run, params, inputs, extension_args, call) -> Job:
        """The one submit path of every generation job: queue `run(params, *inputs)` with the
        job's hooks, or the script `call` names around it. What the request asks of the
        extensions is checked now: a typo fails at once."""
        job.hooks = self.extension_jobs.runner(extension_args)
        chosen = self.extension_jobs.script(call, kind)
        if chosen is None:
            return self.queue.submit(job, run, params, *inputs)
        script, call = chosen
        saves = run.keywords.get("save_images", True)
        job_inputs = inputs  # (pictures, control) in img2img, (control,) in txt2img

        def run_script(params: Any, *, job: Job) -> GenerationResult:
            def process(one: Any, *, vae: str | None = None, inputs: Any = None, save: bool = True) -> Any:
                given = job_inputs if inputs is None else (inputs, *job_inputs[1:])
                if inputs is not None and kind != "img2img":
                    raise ValueError(f"a {kind} script cannot hand pictures to process()")
                options: dict[str, Any] = {"job": job}
                if vae is not None:  # the script's choice (X/Y/Z's VAE axis) over the request's
                    options["vae"] = vae
                if not save:
                    options["save_images"] = False
                return run(self._resolved(one), *given, **options)

            def emit(result: GenerationResult, picture: Any, infotext: str, seed: int) -> None:
                save = self._save_options(kind) if saves else None
                stages.emit_image(result, picture, infotext, seed, save, job)

            def infotext(one: Any, seed: int, extra: dict[str, object] | None = None) -> str:
                model = self._model(one)
                return build_infotext(
                    one, seed=seed, model_name=model.info.name, model_hash=model.short_hash, extra=extra
                )

            grids = self._grids_dir(kind) if saves else None
            tools = {
                "inputs": job_inputs[0] if kind == "img2img" else None,
                "emit": emit,
                "infotext": infotext,
                "upscale": self.upscaling.upscale,
            }
            return self.extension_jobs.run(script, call, kind, params, job, process, grids, **tools)

        return self.queue.submit(job, run_script, params)

    def _grids_dir(self, kind: str) -> Path | None:
        """Where a script's grids go: <kind>-grids beside the pictures' folder (A1111's layout)."""
        save = self._save_options(kind)
        return None if save is None else save.outdir.with_name(f"{kind}-grids")

    def submit_img2img_batch(
        self,
        params: Img2ImgParams,
        input_dir: Path,
        output_dir: Path,
        mask_dir: Path | None = None,
        use_png_info: bool = False,
        control: list[ControlInput] | None = None,
        *,
        extension_args: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Job:
        """Batch img2img; the job's result is a `BatchReport`. Folders are checked now, so a typo
        is an immediate error rather than a failed job. A ControlNet unit without a picture uses
        each batch picture in turn; one with a picture uses it for every file. Each picture is an
        img2img run of its own, with the extensions' hooks (`extension_args`) firing for it."""
        for folder in filter(None, (input_dir, mask_dir)):
            if not Path(folder).is_dir():
                raise ValueError(f"folder not found: {folder}")
        job = Job("img2img", preview_every=0)
        job.aesthetic_scores = self._aesthetic_scores()
        folders = {
            "input_dir": Path(input_dir),
            "output_dir": Path(output_dir),
            "mask_dir": Path(mask_dir) if mask_dir else None,
            "use_png_info": use_png_info,
        }
        run = functools.partial(self._run_img2img_batch, control=control)
        return self._submit(job, "img2img", run, self._resolved(params), (folders,), extension_args, None)

    def _run_img2img_batch(
        self, params: Img2ImgParams, folders: dict[str, Any], *, control: Any, job: Job
    ) -> BatchReport:
        def run_one(one: Img2ImgParams, inputs: Img2ImgInputs) -> GenerationResult:
            # The batch writes its pictures to the output folder itself.
            return self._run_img2img(one, inputs, control, job=job, save_images=False)

        return run_batch(run_one, params, should_stop=lambda: job.interrupted, **folders)

    # -- picture tools (composed services; the UI and the API call them through the facade) -------
    def upscaler_names(self) -> list[str]:
        return self.upscaling.names()

    def submit_extras(self, params: ExtrasParams, pictures: list[Any]) -> Job:
        return self.upscaling.submit(params, pictures)

    def submit_extras_folder(self, params: ExtrasParams, input_dir: Path, output_dir: Path) -> Job:
        return self.upscaling.submit_folder(params, input_dir, output_dir)

    def _extras_outdir(self) -> Path | None:
        settings = self._settings
        if not settings.save_images:
            return None
        return self.outdir / "extras-images" if self.outdir else settings.extras_outdir(self.data_dir)

    def controlnet_models(self) -> list[str]:
        return self.control.models()

    def preprocessors(self) -> list[tuple[str, str | None]]:
        return self.control.preprocessors()

    def preview_control(self, unit: ControlNetUnit, image: Any, width: int, height: int) -> Any:
        return self.control.preview(unit, image, width, height)

    def detect_control(
        self, module: str, image: Any, resolution: int, threshold_a: float | None, threshold_b: float | None
    ) -> Any:
        return self.control.detect(module, image, resolution, threshold_a, threshold_b)

    def img2img(self, params: Img2ImgParams, inputs: Img2ImgInputs) -> GenerationResult:
        return self._wait(self.submit_img2img(params, inputs))

    def txt2img(self, params: GenerationParams) -> GenerationResult:
        return self._wait(self.submit_txt2img(params))

    @staticmethod
    def _wait(job: Job) -> Any:
        job.wait()
        if job.error is not None:
            raise job.error
        return job.result


def _drop_tracebacks(error: BaseException) -> None:
    """Forget the tracebacks of `error` and of the errors it was raised from; the messages stay."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
