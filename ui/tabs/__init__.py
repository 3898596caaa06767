"""One module per tab of the page: its layout and, where they are small, its handlers. The
generation tabs' handlers are big and shared (the Inpaint tab is the img2img tab with one mode), so
they live in `ui.handlers`."""
