"""The Gradio page: quick-settings bar on top, then the txt2img / img2img / Inpaint / ControlNet /
Upscaling / PNG Info / Settings tabs.

`build_ui(engine)` only lays out components and wires handlers; it never loads a model, so the
server is up in seconds. `ui.server` serves it together with the API.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# Before gradio reads it: no telemetry, no version check — Atelier makes no external requests.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ui.common import EngineLike, error_message, message_html  # noqa: E402
from ui.handlers.progress import SessionJobs  # noqa: E402
from ui.handlers.send_to import editor_value, selected_infotext, selected_picture  # noqa: E402
from ui.handlers.txt2img import OPTIONAL_FIELDS  # noqa: E402
from ui.tabs.extensions import build_extension_settings, build_extensions_tab  # noqa: E402
from ui.tabs.img2img import build_img2img_tab  # noqa: E402
from ui.tabs.png_info import SEND_FIELDS, build_png_info_tab, infotext_to_fields, read_picture  # noqa: E402
from ui.tabs.settings import (  # noqa: E402
    build_sampler_settings_tab,
    build_settings_tab,
    current_preferences_html,
)
from ui.tabs.txt2img import build_txt2img_tab  # noqa: E402
from ui.tabs.upscaling import build_extras_tab  # noqa: E402
from ui.theme import CSS  # noqa: E402
from ui.widgets.quicksettings import build_quicksettings, current_checkpoint_update  # noqa: E402
from ui.widgets.size_picker import wire_size_proposals, wire_value_proposals  # noqa: E402

TITLE = "Atelier"


def build_ui(engine: EngineLike) -> gr.Blocks:
    """The whole page for `engine`. Styling is given when it is served (Gradio 6): see `page_kwargs`."""
    jobs = SessionJobs()
    # Every gallery image and preview is a file in Gradio's cache: sweep hourly, drop after a day.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        checkpoint, checkpoint_chosen = build_quicksettings(engine)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt2img = build_txt2img_tab(engine, jobs)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                img2img = build_img2img_tab(engine, jobs, tab="img2img")
            with gr.Tab("Inpaint", id="inpaint", elem_id="tab_inpaint"):
                inpaint = build_img2img_tab(engine, jobs, tab="inpaint")
            with gr.Tab("ControlNet", id="controlnet", elem_id="tab_controlnet"):
                controlnet = build_txt2img_tab(engine, jobs, tab="controlnet")
            with gr.Tab("Upscaling", id="extras", elem_id="tab_extras"):
                extras = build_extras_tab(engine, jobs)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png_text, send_button, send_img2img_button, png_image = build_png_info_tab()
            with gr.Tab("Sampler settings", id="sampler_settings", elem_id="tab_sampler_settings"):
                sampler_controls, sampler_names, preferred = build_sampler_settings_tab(engine, checkpoint)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                setting_controls, setting_names = build_settings_tab(engine)
                build_extension_settings(engine)
            for contribution in engine.extensions.tabs:  # tabs added by extensions
                with gr.Tab(contribution.title, elem_id=f"tab_ext_{contribution.extension}"):
                    _build_extension_tab(engine, contribution)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                build_extensions_tab(engine)
            setting_controls, setting_names = (
                setting_controls + sampler_controls,
                setting_names + sampler_names,
            )

        wire_size_proposals(
            engine,
            checkpoint_chosen,
            [
                (tab.size_picker, tab.fields["width"], tab.fields["height"])
                for tab in (txt2img, img2img, inpaint, controlnet)
            ],
        )
        wire_value_proposals(
            engine,
            checkpoint_chosen,
            [
                (tab.fields["cfg_scale"], tab.fields["steps"])
                for tab in (txt2img, img2img, inpaint, controlnet)
            ],
        )
        _wire_sending(
            tabs,
            [txt2img, img2img, inpaint, controlnet, extras],
            png_text,
            png_image,
            send_button,
            send_img2img_button,
        )

        # Defaults come from the settings as they are when the page opens, so "Apply settings"
        # takes effect on reload without a restart. Only values that changed since the page was
        # built are sent: an unchanged one is skipped so it never overwrites what a quick user
        # (or a test) already typed.
        default_fields = ("sampler_name", "scheduler", "steps", "cfg_scale")
        default_outputs = [txt2img.fields[name] for name in default_fields]
        built_with = engine.settings

        def on_page_load() -> list[Any]:
            now = engine.settings
            names = [f"default_{n}" for n in ("sampler", "scheduler", "steps", "cfg_scale")]
            return [
                getattr(now, name) if getattr(now, name) != getattr(built_with, name) else gr.skip()
                for name in [*names, *setting_names]
            ]

        demo.load(
            on_page_load, outputs=[*default_outputs, *setting_controls], queue=False, api_visibility="private"
        )

        # The checkpoint's preferences line: the Settings switch may have changed since the page was built.
        demo.load(
            lambda: current_preferences_html(engine),
            outputs=preferred,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        demo.load(
            lambda: current_checkpoint_update(engine),
            outputs=checkpoint,
            queue=False,
            api_visibility="private",
        )
    from engine.plugins.hooks import Stage, UITabsContext

    labels = [tab.label for tab in tabs.children if isinstance(tab, gr.Tab)]
    engine.extensions.registry.run_app(Stage.UI_TABS, UITabsContext(labels))
    return demo


def _build_extension_tab(engine: EngineLike, contribution: Any) -> None:
    """An extension's own tab; if building it fails, the tab shows why and the page still loads."""
    try:
        contribution.build(engine)
    except Exception as exc:
        gr.HTML(message_html(f"Extension {contribution.extension}: this tab failed to build: {exc}"))


def _paste_handler(target: Any, name: str, with_picture: bool):
    """A handler filling `target`'s prompt/sampling fields from an infotext (and, with a picture,
    its input picture), then switching to its tab. Returns (handler, outputs)."""
    # The hires fields (txt2img), the denoising strength (img2img) and the variation seed are
    # filled too when the tab has them.
    names = (*SEND_FIELDS, *(n for n in OPTIONAL_FIELDS if n in target.fields))
    outputs = [target.fields[n] for n in (*names, "override_settings")]
    picture_outputs: list[Any] = []
    if with_picture:
        picture_outputs = [target.fields["inpaint" if name == "inpaint" else "init_image"]]
        if name == "img2img":  # show the img2img mode and make it the selected one
            picture_outputs += [target.fields["mode"], target.mode_tabs]

    def handler(text: str, picture: Any) -> tuple[Any, ...]:
        try:
            values, overrides = infotext_to_fields(text, names) if text else (None, [])
        except Exception as exc:  # unparsable or invalid parameters: say so, stay on the tab
            gr.Warning(f"Cannot send to {name}: {error_message(exc)}")
            return (gr.skip(),) * (len(outputs) + len(picture_outputs) + 1)
        fields = (
            (*values, gr.Dropdown(choices=overrides, value=overrides, visible=bool(overrides)))
            if values is not None
            else (gr.skip(),) * len(outputs)  # a picture without parameters: keep the fields
        )
        extra: tuple[Any, ...] = ()
        if with_picture:
            extra = (editor_value(picture) if name == "inpaint" else picture,)
            if name == "img2img":
                extra += ("img2img", gr.Tabs(selected="img2img"))
        return (*fields, *extra, gr.Tabs(selected=name))

    return handler, [*outputs, *picture_outputs]


def _wire_sending(tabs, uis, png_text, png_image, send_txt2img, send_img2img) -> None:
    """PNG Info → txt2img / img2img, and every gallery's "Send to img2img / inpaint / extras"."""
    txt2img, img2img, inpaint, _, extras = uis
    events = dict(api_visibility="private")
    to_txt2img, txt2img_outputs = _paste_handler(txt2img, "txt2img", with_picture=False)
    sent = send_txt2img.click(
        lambda text: to_txt2img(text, None), inputs=png_text, outputs=[*txt2img_outputs, tabs], **events
    )
    txt2img.recount_after(sent)

    to_img2img, img2img_outputs = _paste_handler(img2img, "img2img", with_picture=True)

    def from_png_info(text: str, path: str | None) -> tuple[Any, ...]:
        try:
            picture = read_picture(path)
        except Exception as exc:
            gr.Warning(f"Cannot send to img2img: {error_message(exc)}")
            return (gr.skip(),) * (len(img2img_outputs) + 1)
        return to_img2img(text, picture)

    sent = send_img2img.click(
        from_png_info, inputs=[png_text, png_image], outputs=[*img2img_outputs, tabs], **events
    )
    img2img.recount_after(sent)

    for source in uis:
        for name, button in source.results.send_buttons.items():
            if name == "extras":
                _wire_send_to_extras(tabs, source, extras, button)
            else:
                _wire_gallery_send(tabs, source, img2img if name == "img2img" else inpaint, name)


def _wire_send_to_extras(tabs: gr.Tabs, source: Any, extras: Any, button: gr.Button) -> None:
    def to_extras(gallery: Any, info: Any) -> tuple[Any, Any]:
        try:
            picture = selected_picture(gallery, info)
        except Exception as exc:
            gr.Warning(error_message(exc))
            return gr.skip(), gr.skip()
        return picture, gr.Tabs(selected="extras")

    button.click(
        to_extras,
        inputs=[source.results.gallery, source.gen_info],
        outputs=[extras.image, tabs],
        api_visibility="private",
    )


def _wire_gallery_send(tabs: gr.Tabs, source: Any, target: Any, name: str) -> None:
    handler, outputs = _paste_handler(target, name, with_picture=True)

    def from_gallery(gallery: Any, info: Any) -> tuple[Any, ...]:
        try:
            picture = selected_picture(gallery, info)
        except Exception as exc:
            gr.Warning(error_message(exc))
            return (gr.skip(),) * (len(outputs) + 1)
        return handler(selected_infotext(info), picture)

    sent = source.results.send_buttons[name].click(
        from_gallery,
        inputs=[source.results.gallery, source.gen_info],
        outputs=[*outputs, tabs],
        api_visibility="private",
    )
    target.recount_after(sent)


def page_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """How the page looks and who may open it, from the flags (in Gradio 6 theme and css are given
    when the Blocks are served, not when they are built)."""
    kwargs: dict[str, Any] = {
        "theme": gr.themes.Default(primary_hue="orange", neutral_hue="slate"),
        "css": CSS,
        "footer_links": [],
        "show_error": False,  # errors are shown by the handlers as messages, never as tracebacks
    }
    if getattr(args, "gradio_auth", None):
        from api.auth import parse_credentials

        kwargs["auth"] = parse_credentials(args.gradio_auth)
    return kwargs
