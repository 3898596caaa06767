"""The Extensions tab (installed extensions, their state and errors; enable/disable; install from a
git URL or a folder) and the extensions' entries in the Settings tab. The work is in
engine.plugins.loader / engine.plugins.installer; this module shows it."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from ui.common import EngineLike, error_message, message_html

STATUS_ICON = {"loaded": "✅", "disabled": "⏸️", "error": "❌"}


def extensions_table(engine: EngineLike) -> str:
    """Every extension folder with its state; a failing one shows why it was skipped."""
    records = engine.extensions.records
    if not records:
        return message_html("No extensions found in extensions/.", "info")
    rows = []
    for r in records:
        version = r.manifest.version if r.manifest else ""
        description = r.manifest.description if r.manifest else ""
        detail = f'<div class="atelier-ext-error">{html.escape(r.error)}</div>' if r.error else ""
        rows.append(
            f"<tr data-extension='{html.escape(r.name)}'><td>{STATUS_ICON[r.status]} {r.status}</td>"
            f"<td><b>{html.escape(r.name)}</b></td><td>{html.escape(version)}</td>"
            f"<td>{html.escape(description)}{detail}</td><td>{r.import_seconds:.2f} s</td>"
            f"<td><code>{html.escape(r.folder.name)}</code></td></tr>"
        )
    titles = ("State", "Name", "Version", "Description", "Load time", "Folder")
    head = "<tr>" + "".join(f"<th>{t}</th>" for t in titles) + "</tr>"
    return f'<table class="atelier-extensions" id="extensions_table">{head}{"".join(rows)}</table>'


def hook_errors_html(engine: EngineLike) -> str:
    errors = engine.extensions.registry.errors[-10:]
    if not errors:
        return ""
    items = "".join(
        f"<li><b>{html.escape(e.extension)}</b> in <code>{e.stage}</code>: {html.escape(e.message)}</li>"
        for e in reversed(errors)
    )
    intro = "<p>Recent errors in hooks (the pictures were still made):</p>"
    return f'<div class="atelier-ext-hook-errors">{intro}<ul>{items}</ul></div>'


def apply_enabled(engine: EngineLike, enabled: list[str]) -> tuple[str, str]:
    """Persist the checkboxes. Hooks follow at once; tabs and panels at the next start."""
    wanted = set(enabled or [])
    for record in engine.extensions.records:
        if record.error is None and record.enabled != (record.name in wanted):
            engine.extensions.set_enabled(record.name, record.name in wanted)
    note = message_html(
        "Saved. Hooks follow at once; restart Atelier to add or remove the extensions' tabs and panels.",
        "info",
    )
    return extensions_table(engine), note


def install(engine: EngineLike, source: str, folder_name: str) -> tuple[str, str, Any]:
    """Install from the form; (table, message, checkbox update)."""
    from engine.plugins.installer import install_extension

    try:
        record = install_extension(
            engine.extensions,
            source,
            engine.extensions_dir,
            allowed=engine.extension_install_allowed,
            folder_name=folder_name or "",
        )
    except Exception as exc:  # every refusal is a message; nothing is half-installed
        return extensions_table(engine), message_html(error_message(exc)), gr.skip()
    if record.error:
        message = message_html(f"Installed {record.name}, but it failed to load: {record.error}")
    else:
        message = message_html(
            f"Installed {record.name} {record.manifest.version}. Its hooks are active; "
            "restart Atelier to see its panels.",
            "info",
        )
    return extensions_table(engine), message, gr.update(choices=_names(engine), value=_enabled(engine))


def _names(engine: EngineLike) -> list[str]:
    return [r.name for r in engine.extensions.records if r.error is None]


def _enabled(engine: EngineLike) -> list[str]:
    return [r.name for r in engine.extensions.records if r.error is None and r.enabled]


def build_extensions_tab(engine: EngineLike) -> None:
    with gr.Tabs():
        with gr.Tab("Installed", elem_id="extensions_installed"):
            table = gr.HTML(extensions_table(engine), elem_id="extensions_list")
            errors = gr.HTML(hook_errors_html(engine), elem_id="extensions_hook_errors")
            enabled = gr.CheckboxGroup(
                _names(engine), value=_enabled(engine), label="Enabled", elem_id="extensions_enabled"
            )
            with gr.Row():
                apply = gr.Button("Apply", variant="primary", scale=0, elem_id="extensions_apply")
                refresh = gr.Button("🔄 Refresh", scale=0, elem_id="extensions_refresh")
            note = gr.HTML("", elem_id="extensions_note")
        with gr.Tab("Install from URL", elem_id="extensions_install"):
            if not engine.extension_install_allowed:
                gr.HTML(message_html(_insecure_message()), elem_id="extensions_install_disabled")
            source = gr.Textbox(
                label="Git repository URL or local folder",
                placeholder="https://github.com/user/my-extension.git",
                elem_id="extensions_install_url",
            )
            folder_name = gr.Textbox(
                label="Folder name (empty: from the URL)", elem_id="extensions_install_dirname"
            )
            install_button = gr.Button(
                "Install",
                variant="primary",
                interactive=engine.extension_install_allowed,
                elem_id="extensions_install_button",
            )
            result = gr.HTML("", elem_id="extensions_install_result")
    events = dict(api_visibility="private")
    apply.click(lambda names: apply_enabled(engine, names), inputs=enabled, outputs=[table, note], **events)
    refresh.click(
        lambda: (extensions_table(engine), hook_errors_html(engine)), outputs=[table, errors], **events
    )
    install_button.click(
        lambda src, name: install(engine, src, name),
        inputs=[source, folder_name],
        outputs=[table, result, enabled],
        **events,
    )


def _insecure_message() -> str:
    from engine.plugins.installer import INSECURE_MESSAGE

    return INSECURE_MESSAGE


def build_extension_settings(engine: EngineLike) -> None:
    """The extensions' Settings entries, one accordion per extension, saved on their own button."""
    entries = engine.extensions.settings_entries
    if not entries:
        return
    controls = []
    with gr.Accordion("Extensions", open=False, elem_id="settings_extensions"):
        for entry in entries:
            value = engine.extensions.setting_value(entry.extension, entry.key)
            elem_id = f"setting_ext_{entry.extension}_{entry.key}".replace("-", "_")
            if entry.choices:
                control = gr.Dropdown(list(entry.choices), value=value, label=entry.label, elem_id=elem_id)
            elif isinstance(entry.default, bool):
                control = gr.Checkbox(value=value, label=entry.label, elem_id=elem_id)
            elif (
                isinstance(entry.default, (int, float))
                and entry.minimum is not None
                and entry.maximum is not None
            ):
                control = gr.Slider(
                    entry.minimum,
                    entry.maximum,
                    value=value,
                    step=entry.step,
                    label=entry.label,
                    elem_id=elem_id,
                )
            elif isinstance(entry.default, (int, float)):
                control = gr.Number(value=value, label=entry.label, elem_id=elem_id)
            else:
                control = gr.Textbox(value=str(value), label=entry.label, elem_id=elem_id)
            controls.append(control)
        save = gr.Button("Apply extension settings", elem_id="settings_extensions_apply", scale=0)
        result = gr.HTML("")

    def on_save(*values: Any) -> str:
        try:
            for entry, value in zip(entries, values, strict=True):
                engine.extensions.set_setting(entry.extension, entry.key, value)
        except Exception as exc:
            return message_html(error_message(exc))
        return message_html("Saved.", "info")

    save.click(on_save, inputs=controls, outputs=result, api_visibility="private")
