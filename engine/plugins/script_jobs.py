"""Jobs with extensions: the per-job hook values, and scripts that take a job over.

Kept out of engine.service.facade so the facade stays a list of entry points. `ExtensionJobs` is owned by
the Engine; it checks what a request asks of the extensions (before the job is queued, so a typo
is an immediate error) and builds the ScriptContext a script runs with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from engine.output import images as image_io
from engine.pipeline.results import GenerationResult
from engine.plugins.args import ArgsError, arg_values
from engine.plugins.hooks import HookRunner
from engine.plugins.loader import ExtensionManager, Script
from engine.plugins.scripts import EngineNames, ScriptContext, run_script
from engine.service.jobs import Job


@dataclass(frozen=True)
class ScriptCall:
    """A request's "Script" choice: the script's title and its values by name."""

    title: str
    args: Mapping[str, Any]


class ExtensionJobs:
    def __init__(self, manager: ExtensionManager, names: Callable[[], EngineNames]):
        self.manager = manager
        self._names = names

    def runner(self, extension_args: Mapping[str, Mapping[str, Any]] | None) -> HookRunner:
        """The hooks of a job whose request carries `extension_args` ({extension: {name: value}}),
        each extension's values checked against its panel's argument model (defaults filled in).
        ValueError for an extension that is not loaded (a typo in an API request) or a bad value."""
        args = dict(extension_args or {})
        loaded = {r.name for r in self.manager.records if r.status == "loaded"}
        models = {a.extension: a for a in self.manager.accordions if a.args is not None}
        for name, values in args.items():
            if name not in loaded:
                raise ValueError(
                    f"extension {name!r} is not loaded (loaded: {', '.join(sorted(loaded)) or 'none'})"
                )
            if not isinstance(values, Mapping):
                raise ValueError(f"extension {name!r}: values must be an object of name: value")
            if name in models:
                try:
                    args[name] = arg_values(models[name].args, values)
                except ArgsError as exc:
                    raise ValueError(f"{models[name].title}: {exc}") from None
        return self.manager.registry.runner(args)

    def script(self, call: ScriptCall | None, kind: str) -> tuple[Script, ScriptCall] | None:
        """The script a request names, and the call with its values checked against the script's
        argument model (defaults filled in). ValueError for an unknown script or a bad value."""
        if call is None or call.title in ("", "None"):
            return None
        script = self.manager.script(call.title)
        if kind not in script.tabs:
            raise ValueError(f"script {script.title!r} does not run in {kind}")
        if script.args is not None:
            try:
                call = ScriptCall(script.title, arg_values(script.args, call.args))
            except ArgsError as exc:
                raise ValueError(f"{script.title}: {exc}") from None
        return script, call

    def run(
        self,
        script: Script,
        call: ScriptCall,
        kind: str,
        params: Any,
        job: Job,
        process: Callable[..., GenerationResult],
        grids_dir: Path | None,
        **tools: Any,
    ) -> GenerationResult:
        """Run the script on the queue's worker, inside `job`. `tools`: the ScriptContext's
        inputs, emit, infotext and upscale."""

        def save_grid(image: Image.Image, infotext: str) -> Path | None:
            if grids_dir is None:
                return None
            return image_io.save_image(
                image, grids_dir, seed=None, infotext=infotext, basename_suffix="-grid"
            )

        ctx = ScriptContext(
            kind=kind,
            params=params,
            args=dict(call.args),
            job=job,
            process=process,
            names=self._names(),
            save_grid=save_grid,
            **tools,
        )
        return run_script(script, ctx)
