"""The "Extra networks" panel under the prompts: cards for LoRAs and embeddings (their preview
image, or a card with the name); a click inserts the tag into the prompt, a second click removes
it, as in A1111. 🔄 re-reads the folders."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from engine.models.extra_networks import NetworkCard, toggle_tag
from ui.common import EngineLike

CARD_SIZE = 160


def _placeholder(card: NetworkCard) -> Image.Image:
    """A plain card with the kind and name, for files without a preview image."""
    image = Image.new("RGB", (CARD_SIZE, CARD_SIZE), (226, 232, 240))
    draw = ImageDraw.Draw(image)
    draw.text((12, 12), card.kind.upper(), fill=(100, 116, 139), font=ImageFont.load_default(size=14))
    name = card.name if len(card.name) <= 16 else card.name[:15] + "…"
    draw.text((12, CARD_SIZE // 2 - 10), name, fill=(30, 41, 59), font=ImageFont.load_default(size=18))
    return image


def gallery_items(cards: list[NetworkCard]) -> list[tuple[Any, str]]:
    items: list[tuple[Any, str]] = []
    for card in cards:
        image: Any = str(card.preview) if card.preview else _placeholder(card)
        items.append((image, f"{card.name} ({card.kind})"))
    return items


def build_extra_networks(engine: EngineLike, prompt: gr.Textbox, tab: str = "txt2img") -> Any:
    """Lay out the panel; returns the card-click event (prompt text written from code)."""
    cards_state = gr.State([])
    with gr.Accordion("Extra networks", open=False, elem_id=f"{tab}_extra_networks") as panel:
        with gr.Row():
            gr.Markdown(
                "LoRAs from `models/Lora`, embeddings from `embeddings/`. Click a card to add it "
                "to the prompt, again to remove it.",
            )
            refresh = gr.Button("🔄", elem_id=f"{tab}_extra_refresh", min_width=40, scale=0)
        gallery = gr.Gallery(
            value=[],
            columns=8,
            height=240,
            allow_preview=False,
            preview=False,
            object_fit="contain",
            show_label=False,
            elem_id=f"{tab}_extra_gallery",
            elem_classes=["extra-gallery"],
        )

    def on_refresh() -> tuple[list[tuple[Any, str]], list[NetworkCard]]:
        cards = engine.extra_networks()
        return gallery_items(cards), cards

    def on_select(text: str, cards: list[NetworkCard], event: gr.SelectData) -> str:
        index = int(event.index)
        if not 0 <= index < len(cards):
            return gr.skip()
        return toggle_tag(text or "", cards[index].tag)

    for trigger in (refresh.click, panel.expand):  # the folders are read when the panel opens
        trigger(on_refresh, outputs=[gallery, cards_state], queue=False, api_visibility="private")
    return gallery.select(
        on_select, inputs=[prompt, cards_state], outputs=prompt, queue=False, api_visibility="private"
    )
