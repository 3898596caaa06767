"""The extension loader (docs/design.md, example 9).

An extension is a folder `extensions/<name>/` with a manifest, `extension.toml`:

    name = "cfg-rescale"              # unique; the key of its values in jobs and the API
    version = "1.0.0"
    description = "Rescales CFG ..."
    entry = "main.py"                 # one entry point defining `setup(ext: ExtensionAPI)`
    requirements = ["numpy>=1.20"]    # pip requirements, installed at install time only
    load_order = 100                  # lower loads first; hooks of equal `order` run in this order

The entry point is imported in isolation (its own module name, no sys.path change; relative
imports inside the folder work) and its `setup` registers hooks and UI contributions on the
`ExtensionAPI` it is given. An extension that fails (bad manifest, syntax error, missing
requirement, a raising `setup`) is logged, listed with its error and skipped: the app still starts.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import sys
import time
import tomllib
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine.plugins.hooks import HookRegistry, Registration, Stage

log = logging.getLogger(__name__)

MANIFEST = "extension.toml"
MODULE_PREFIX = "atelier_extensions"
TABS = ("txt2img", "img2img")  # the generation tabs an accordion or a script can join


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    description: str = ""
    entry: str = "main.py"
    requirements: tuple[str, ...] = ()
    load_order: int = 100


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest; ValueError with a clear message for anything missing or wrong."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"no {MANIFEST} in {folder.name}/")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{MANIFEST} is not valid TOML: {exc}") from exc
    missing = [key for key in ("name", "version") if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        raise ValueError(f"{MANIFEST} needs {' and '.join(missing)}")
    requirements = data.get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise ValueError(f"{MANIFEST}: requirements must be a list of strings")
    entry = str(data.get("entry", "main.py"))
    if Path(entry).is_absolute() or ".." in Path(entry).parts:
        raise ValueError(f"{MANIFEST}: entry must be a file inside the extension folder")
    order = data.get("load_order", 100)
    if not isinstance(order, int):
        raise ValueError(f"{MANIFEST}: load_order must be an integer")
    return Manifest(
        name=data["name"],
        version=data["version"],
        description=str(data.get("description", "")),
        entry=entry,
        requirements=tuple(requirements),
        load_order=order,
    )


def unmet_requirements(requirements: tuple[str, ...]) -> list[str]:
    """The requirements the current environment does not satisfy (ValueError for a malformed one)."""
    from packaging.requirements import InvalidRequirement, Requirement

    unmet = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise ValueError(f"bad requirement {text!r}: {exc}") from exc
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{text} (installed: {installed})")
    return unmet


# -- what an extension contributes ----------------------------------------------------------------
@dataclass(frozen=True)
class Accordion:
    """A panel in the txt2img / img2img tabs. `build()` lays out Gradio components inside the
    accordion and returns them by name; their values reach the extension's hooks for that job as
    `ctx.gen.args[name]` (and the API's `alwayson_scripts`, by the same names, or in the order of
    `args`). `args`: the pydantic model (engine.plugins.args.ExtensionArgs) the values follow."""

    extension: str
    title: str
    build: Callable[[], dict[str, Any]]
    tabs: tuple[str, ...] = TABS
    args: type[BaseModel] | None = None


@dataclass(frozen=True)
class TabContribution:
    extension: str
    title: str
    build: Callable[[Any], None]  # build(engine) inside the new gr.Tab


@dataclass(frozen=True)
class SettingEntry:
    extension: str
    key: str  # stored as "<extension>.<key>" is not needed: keys are namespaced by extension
    default: Any
    label: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None


@dataclass(frozen=True)
class Script:
    """A1111's "scripts" dropdown entry: takes over the job. `run(ctx: ScriptContext)` returns a
    GenerationResult; `ui()` lays out its controls (returned by name, like an accordion's).
    `args`: the pydantic model (engine.plugins.args.ExtensionArgs) its values follow, which the
    UI's and the API's values are validated with; `aliases`: other titles the API accepts
    (A1111's name where ours differs)."""

    extension: str
    title: str
    run: Callable[[Any], Any]
    ui: Callable[[], dict[str, Any]] | None = None
    tabs: tuple[str, ...] = ("txt2img",)
    args: type[BaseModel] | None = None
    aliases: tuple[str, ...] = ()

    def named(self, title: str) -> bool:
        return title.lower() in (self.title.lower(), *(a.lower() for a in self.aliases))


class ExtensionAPI:
    """What `setup(ext)` receives. Everything an extension does goes through these methods."""

    def __init__(self, name: str, folder: Path, manager: ExtensionManager, load_index: int):
        self.name, self.folder = name, folder
        self._manager, self._load_index = manager, load_index

    def on(self, stage: Stage | str, callback: Callable[[Any], None], *, order: int = 0) -> None:
        """Call `callback(ctx)` at `stage` (an engine.plugins.hooks.Stage); lower `order` runs first."""
        stage = Stage(stage)
        self._manager.registry.add(Registration(stage, callback, self.name, order, self._load_index))

    def accordion(
        self,
        title: str,
        build: Callable[[], dict[str, Any]],
        *,
        tabs: tuple[str, ...] = TABS,
        args: type[BaseModel] | None = None,
    ) -> None:
        self._manager.accordions.append(Accordion(self.name, title, build, _check_tabs(tabs), args))

    def tab(self, title: str, build: Callable[[Any], None]) -> None:
        self._manager.tabs.append(TabContribution(self.name, title, build))

    def setting(self, key: str, default: Any, label: str, **options: Any) -> None:
        """A Settings entry (section "Extensions"); read it with `ext.get_setting(key)`."""
        self._manager.settings_entries.append(SettingEntry(self.name, key, default, label, **options))

    def get_setting(self, key: str) -> Any:
        return self._manager.setting_value(self.name, key)

    def engine_names(self) -> Any:
        """The engine's names now (engine.plugins.scripts.EngineNames), None without an engine. Call it
        when a dropdown needs them, not in setup(): checkpoints come and go while the app runs."""
        provider = self._manager.names_provider
        return provider() if provider is not None else None

    def script(
        self,
        title: str,
        run: Callable[[Any], Any],
        *,
        ui: Callable[[], dict[str, Any]] | None = None,
        tabs: tuple[str, ...] = ("txt2img",),
        args: type[BaseModel] | None = None,
        aliases: tuple[str, ...] = (),
    ) -> None:
        self._manager.scripts.append(
            Script(self.name, title, run, ui, _check_tabs(tabs), args, tuple(aliases))
        )


def _check_tabs(tabs: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [t for t in tabs if t not in TABS]
    if unknown:
        raise ValueError(f"unknown tab {unknown[0]!r} (known: {', '.join(TABS)})")
    return tuple(tabs)


# -- loading --------------------------------------------------------------------------------------
@dataclass
class ExtensionRecord:
    """One folder of extensions/, as the Extensions tab lists it."""

    folder: Path
    name: str
    manifest: Manifest | None = None
    enabled: bool = True
    error: str | None = None  # why it was skipped (None: loaded, or disabled)
    import_seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "loaded" if self.enabled else "disabled"


@dataclass
class ExtensionManager:
    """Scans the extension folders, loads what is enabled, and holds what the extensions added."""

    roots: list[Path]  # the repository's extensions/ (built-in ones) first, then the user's folder
    state_file: Path  # JSON: {"disabled": [...], "settings": {ext: {key: value}}}
    registry: HookRegistry = field(default_factory=HookRegistry)
    records: list[ExtensionRecord] = field(default_factory=list)
    accordions: list[Accordion] = field(default_factory=list)
    tabs: list[TabContribution] = field(default_factory=list)
    settings_entries: list[SettingEntry] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    # The engine's current names (samplers, checkpoints, ...), for extensions' dropdowns.
    names_provider: Callable[[], Any] | None = None

    # -- state ------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(self.state_file)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Persisted; hooks follow at once, UI contributions at the next start."""
        record = self.record(name)
        state = self._state()
        disabled = set(state.get("disabled", []))
        (disabled.discard if enabled else disabled.add)(name)
        state["disabled"] = sorted(disabled)
        self._save_state(state)
        record.enabled = enabled
        (self.registry.disabled.discard if enabled else self.registry.disabled.add)(name)

    def setting_value(self, extension: str, key: str) -> Any:
        stored = self._state().get("settings", {}).get(extension, {})
        if key in stored:
            return stored[key]
        for entry in self.settings_entries:
            if entry.extension == extension and entry.key == key:
                return entry.default
        raise KeyError(f"extension {extension} has no setting {key!r}")

    def set_setting(self, extension: str, key: str, value: Any) -> None:
        if not any(e.extension == extension and e.key == key for e in self.settings_entries):
            raise ValueError(f"extension {extension} has no setting {key!r}")
        state = self._state()
        state.setdefault("settings", {}).setdefault(extension, {})[key] = value
        self._save_state(state)

    def record(self, name: str) -> ExtensionRecord:
        for record in self.records:
            if record.name == name:
                return record
        raise ValueError(f"no extension named {name!r}")

    # -- scanning and loading ---------------------------------------------------------------------
    def folders(self) -> list[Path]:
        seen, found = set(), []
        for root in self.roots:
            if not root.is_dir():
                continue
            for folder in sorted(
                p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
            ):
                if folder.resolve() not in seen:
                    seen.add(folder.resolve())
                    found.append(folder)
        return found

    def load_all(self) -> list[ExtensionRecord]:
        disabled = set(self._state().get("disabled", []))
        entries: list[tuple[Path, Manifest | None, str | None]] = []
        for folder in self.folders():
            try:
                entries.append((folder, read_manifest(folder), None))
            except ValueError as exc:
                entries.append((folder, None, str(exc)))
        entries.sort(key=lambda e: (e[1].load_order if e[1] else 10**9, e[0].name))
        for folder, manifest, error in entries:
            self.load_one(folder, manifest, error, disabled)
        return self.records

    def load_one(
        self, folder: Path, manifest: Manifest | None, error: str | None, disabled: set[str]
    ) -> ExtensionRecord:
        name = manifest.name if manifest else folder.name
        record = ExtensionRecord(folder, name, manifest, name not in disabled, error)
        if any(r.name == name for r in self.records):
            record.error = f"another extension is already named {name!r}"
        self.records.append(record)
        if record.error:
            log.warning("extension %s skipped: %s", folder.name, record.error)
            return record
        if not record.enabled:
            self.registry.disabled.add(name)
            return record
        started = time.perf_counter()
        try:
            self._import(folder, manifest, len(self.records) - 1)
        except Exception as exc:  # any failure of foreign code: listed with its reason, skipped
            record.error = f"{type(exc).__name__}: {exc}"
            self._forget(name)
            log.warning("extension %s failed to load: %s", name, record.error, exc_info=True)
        record.import_seconds = time.perf_counter() - started
        log.info("extension %s loaded in %.2f s", name, record.import_seconds)
        return record

    def _import(self, folder: Path, manifest: Manifest, load_index: int) -> None:
        unmet = unmet_requirements(manifest.requirements)
        if unmet:
            raise ImportError(
                f"missing requirement {', '.join(unmet)}: install the extension again to install it"
            )
        entry = folder / manifest.entry
        if not entry.is_file():
            raise FileNotFoundError(f"entry point {manifest.entry} not found")
        parent = sys.modules.setdefault(MODULE_PREFIX, types.ModuleType(MODULE_PREFIX))
        parent.__path__ = []  # a namespace for the extensions' modules, never searched itself
        module_name = extension_module_name(manifest.name)
        spec = importlib.util.spec_from_file_location(
            module_name, entry, submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # relative imports inside the extension resolve through it
        setattr(parent, module_name.rsplit(".", 1)[1], module)
        try:
            spec.loader.exec_module(module)
            setup = getattr(module, "setup", None)
            if not callable(setup):
                raise AttributeError(f"{manifest.entry} defines no setup(ext) function")
            setup(ExtensionAPI(manifest.name, folder, self, load_index))
        except BaseException:
            sys.modules.pop(module_name, None)
            raise

    def _forget(self, name: str) -> None:
        """Drop what a failed extension registered before it failed."""
        self.registry.remove_extension(name)
        for attr in ("accordions", "tabs", "settings_entries", "scripts"):
            setattr(self, attr, [c for c in getattr(self, attr) if c.extension != name])

    # -- queries ----------------------------------------------------------------------------------
    def accordions_for(self, tab: str) -> list[Accordion]:
        return [a for a in self.accordions if tab in a.tabs and self._active(a.extension)]

    def scripts_for(self, tab: str) -> list[Script]:
        return [s for s in self.scripts if tab in s.tabs and self._active(s.extension)]

    def script(self, title: str) -> Script:
        for script in self.scripts:
            if script.named(title) and self._active(script.extension):
                return script
        known = ", ".join(s.title for s in self.scripts if self._active(s.extension))
        raise ValueError(f"unknown script {title!r} (known: {known or 'none'})")

    def _active(self, name: str) -> bool:
        return name not in self.registry.disabled


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).lower() or "extension"


def extension_module_name(name: str) -> str:
    """The module an extension's entry file is imported as (in sys.modules)."""
    return f"{MODULE_PREFIX}.{_identifier(name)}"
