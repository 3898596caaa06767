"""The extension loader, installer and their face in the engine and the UI: broken folders are listed
with their error and skipped, enable/disable persists, installing copies / clones a folder (refused
with --listen unless allowed), and a job's extension values and script are checked before it is
queued."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.cmd_args import parse_args
from engine.plugins.hooks import Stage
from engine.plugins.installer import INSECURE_MESSAGE, install_extension
from engine.plugins.loader import ExtensionManager, read_manifest, unmet_requirements
from engine.plugins.script_jobs import ScriptCall

ROOT = Path(__file__).resolve().parents[2]
GOOD = "def setup(ext):\n    ext.on('step_end', lambda ctx: None)\n"


def make(root: Path, folder: str, manifest: str | None, code: str = GOOD, entry: str = "main.py") -> Path:
    path = root / folder
    path.mkdir(parents=True)
    if manifest is not None:
        (path / "extension.toml").write_text(manifest)
    (path / entry).write_text(code)
    return path


def manifest(name: str, extra: str = "") -> str:
    return f'name = "{name}"\nversion = "0.1"\n{extra}'


@pytest.fixture()
def broken_root(tmp_path):
    root = tmp_path / "extensions"
    make(root, "good", manifest("good", "load_order = 5"))
    make(root, "syntax", manifest("syntax"), "def setup(ext):\n    return (\n")
    make(root, "no-manifest", None)
    make(root, "bad-toml", "name = [")
    make(
        root, "bad-requirement", manifest("bad-requirement", 'requirements = ["surely-not-installed-pkg>=1"]')
    )
    make(
        root,
        "raises",
        manifest("raises"),
        "def setup(ext):\n    ext.on('step_end', print)\n    raise KeyError('x')\n",
    )
    make(root, "no-setup", manifest("no-setup"), "VALUE = 1\n")
    make(
        root,
        "relative",
        manifest("relative"),
        "from .helper import X\n\ndef setup(ext):\n    assert X == 1\n",
    )
    (root / "relative" / "helper.py").write_text("X = 1\n")
    return root


def test_broken_extensions_are_listed_with_their_error_and_skipped(broken_root):
    manager = ExtensionManager([broken_root], broken_root / "state.json")
    records = {r.folder.name: r for r in manager.load_all()}
    assert records["good"].status == "loaded" and records["relative"].status == "loaded"
    assert records["good"].import_seconds >= 0
    assert "SyntaxError" in records["syntax"].error
    assert "no extension.toml" in records["no-manifest"].error
    assert "not valid TOML" in records["bad-toml"].error
    assert "missing requirement surely-not-installed-pkg>=1" in records["bad-requirement"].error
    assert "KeyError" in records["raises"].error
    assert "defines no setup" in records["no-setup"].error
    # What a failing extension registered before it failed is dropped; the good one's hook stays.
    assert [r.extension for r in manager.registry.callbacks(Stage.STEP_END)] == ["good"]
    assert manager.records[0].name == "good"  # load_order 5 before the default 100


def test_manifest_rules(tmp_path):
    make(tmp_path, "a", 'version = "1"\n')
    with pytest.raises(ValueError, match="needs name"):
        read_manifest(tmp_path / "a")
    make(tmp_path, "b", manifest("b", 'entry = "../evil.py"'))
    with pytest.raises(ValueError, match="inside the extension folder"):
        read_manifest(tmp_path / "b")
    assert unmet_requirements(("packaging",)) == []
    assert unmet_requirements(("packaging<1",))[0].startswith("packaging<1 (installed:")
    with pytest.raises(ValueError, match="bad requirement"):
        unmet_requirements(("not a requirement!!",))


def test_two_extensions_with_one_name_keep_the_first(tmp_path):
    make(tmp_path, "one", manifest("same"))
    make(tmp_path, "two", manifest("same"))
    manager = ExtensionManager([tmp_path], tmp_path / "state.json")
    first, second = manager.load_all()
    assert first.status == "loaded" and "already named 'same'" in second.error


def test_disabling_persists_and_silences_hooks_at_once(tmp_path):
    make(tmp_path, "good", manifest("good"))
    manager = ExtensionManager([tmp_path], tmp_path / "state.json")
    manager.load_all()
    manager.set_enabled("good", False)
    assert manager.registry.callbacks(Stage.STEP_END) == []
    again = ExtensionManager([tmp_path], tmp_path / "state.json")
    (record,) = again.load_all()
    assert record.status == "disabled" and again.registry.callbacks(Stage.STEP_END) == []
    again.set_enabled("good", True)
    assert ExtensionManager([tmp_path], tmp_path / "state.json").load_all()[0].status == "loaded"


def test_settings_entries_are_saved_per_extension(tmp_path):
    make(
        tmp_path,
        "s",
        manifest("s"),
        "def setup(ext):\n    ext.setting('level', 3, 'Level', minimum=0, maximum=9)\n",
    )
    manager = ExtensionManager([tmp_path], tmp_path / "state.json")
    manager.load_all()
    assert manager.setting_value("s", "level") == 3
    manager.set_setting("s", "level", 7)
    assert manager.setting_value("s", "level") == 7
    with pytest.raises(ValueError, match="no setting"):
        manager.set_setting("s", "nope", 1)


# -- installing -----------------------------------------------------------------------------------
def source_extension(tmp_path: Path, name: str = "installed-ext", requirement: str = "packaging") -> Path:
    return make(tmp_path / "sources", name, manifest(name, f'requirements = ["{requirement}"]'))


def test_install_from_a_local_folder_and_from_a_git_url(tmp_path):
    target = tmp_path / "user-extensions"
    manager = ExtensionManager([target], tmp_path / "state.json")
    manager.load_all()
    record = install_extension(manager, str(source_extension(tmp_path)), target, allowed=True)
    assert record.status == "loaded" and (target / "installed-ext" / "main.py").is_file()
    with pytest.raises(ValueError, match="already exists"):
        install_extension(manager, str(tmp_path / "sources" / "installed-ext"), target, allowed=True)

    repo = source_extension(tmp_path, "from-git")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    record = install_extension(manager, f"file://{repo}", target, allowed=True)
    assert record.name == "from-git" and record.status == "loaded"
    assert not any(p.name.startswith(".install-") for p in target.iterdir())


def test_install_is_refused_when_not_allowed_or_broken(tmp_path):
    target = tmp_path / "user-extensions"
    manager = ExtensionManager([target], tmp_path / "state.json")
    with pytest.raises(ValueError, match="--enable-insecure-extension-access"):
        install_extension(manager, str(source_extension(tmp_path)), target, allowed=False)
    with pytest.raises(ValueError, match="not a git URL or an existing folder"):
        install_extension(manager, str(tmp_path / "missing"), target, allowed=True)
    no_manifest = make(tmp_path / "sources", "plain", None)
    with pytest.raises(ValueError, match="no extension.toml"):
        install_extension(manager, str(no_manifest), target, allowed=True)
    with pytest.raises(ValueError, match="git clone failed"):
        install_extension(manager, "file:///nonexistent/repo.git", target, allowed=True)
    assert not target.exists() or list(target.iterdir()) == []  # nothing half-installed


def test_listen_disables_install_unless_insecure_access_is_given():
    assert parse_args([]).extension_install_allowed
    assert not parse_args(["--listen"]).extension_install_allowed
    assert parse_args(["--listen", "--enable-insecure-extension-access"]).extension_install_allowed
    assert "--listen" in INSECURE_MESSAGE


# -- the engine -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from engine.service.facade import Engine

    data = tmp_path_factory.mktemp("data")
    make(data / "extensions", "user-ext", manifest("user-ext"))
    make(data / "extensions", "broken", manifest("broken"), "raise RuntimeError('bad import')\n")
    return Engine(data_dir=data, device="cpu")


def test_the_engine_loads_builtin_and_user_extensions_and_survives_broken_ones(engine):
    status = {r.name: r.status for r in engine.extensions.records}
    for name in ("cfg-rescale", "user-ext", "prompts-from-file"):
        assert status[name] == "loaded", name
    assert status["broken"] == "error"


def test_requests_naming_unknown_extensions_or_scripts_fail_before_queueing(engine):
    from engine.schema.params import GenerationParams

    p = GenerationParams(prompt="x", steps=1, width=64, height=64)
    with pytest.raises(ValueError, match="extension 'nope' is not loaded"):
        engine.submit_txt2img(p, extension_args={"nope": {}})
    with pytest.raises(ValueError, match="extension 'broken' is not loaded"):
        engine.submit_txt2img(p, extension_args={"broken": {}})
    with pytest.raises(ValueError, match="unknown script 'Nope'"):
        engine.submit_txt2img(p, script=ScriptCall("Nope", {}))


def test_disabled_extensions_leave_the_ui_but_not_the_list(engine, tmp_path):
    from ui.tabs.extensions import apply_enabled, extensions_table

    table, _note = apply_enabled(engine, [r.name for r in engine.extensions.records if r.name != "user-ext"])
    try:
        assert "disabled" in table and "bad import" in extensions_table(engine)
        assert "user-ext" in engine.extensions.registry.disabled
    finally:
        engine.extensions.set_enabled("user-ext", True)


def test_extension_panels_decode_their_values():
    from ui.widgets.extension_panels import ExtensionInputs

    inputs = ExtensionInputs(
        components=[None] * 4, accordions=[("a", ["on", "level"])], scripts=[("S", ["x"]), ("T", ["y"])]
    )
    args, call = inputs.decode([True, 3, "xv", "yv"], "T")
    assert args == {"a": {"on": True, "level": 3}} and call == ScriptCall("T", {"y": "yv"})
    assert inputs.decode([True, 3, "xv", "yv"], "None")[1] is None


def test_the_page_builds_with_every_contribution_and_a_failing_one(tmp_path):
    import gradio as gr

    from tests.fakes.fake_engine import FakeEngine
    from ui.app import build_ui

    make(
        tmp_path,
        "ui-ext",
        manifest("ui-ext"),
        textwrap.dedent(
            """
            import gradio as gr
            def setup(ext):
                ext.accordion("Demo panel", lambda: {"level": gr.Slider(0, 5, value=2, elem_id="demo_level")})
                ext.tab("Demo tab", lambda engine: gr.Markdown("hello", elem_id="demo_tab_text"))
                ext.setting("flag", True, "Demo flag")
                ext.script("Demo script", lambda ctx: None, ui=lambda: {"n": gr.Number(1, elem_id="demo_n")})
                def broken():
                    raise RuntimeError("panel bug")
                ext.accordion("Broken panel", broken)
            """
        ),
    )
    fake = FakeEngine()
    fake.extensions = ExtensionManager([tmp_path], tmp_path / "state.json")
    fake.extensions.load_all()
    demo = build_ui(fake)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    for elem_id in ("demo_level", "demo_tab_text", "demo_n", "tab_extensions", "extensions_list"):
        assert elem_id in ids, elem_id
    script = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "txt2img_script")
    assert "Demo script" in [c[0] for c in script.choices]
    assert isinstance(demo, gr.Blocks)
