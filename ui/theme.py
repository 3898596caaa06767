"""Page CSS (passed to `launch(css=...)`, Gradio 6). Kept small: the theme does most of the work."""

CSS = """
.gradio-container { max-width: 1600px !important; }

/* Quick-settings bar: compact, left-aligned, like A1111's. */
#quicksettings { gap: 0.4em; align-items: flex-end; }
#refresh_sd_model_checkpoint { max-width: 3em; height: 2.6em; }

/* Top row: prompts on the left, a tall Generate button on the right. */
#txt2img_actions, #img2img_actions, #inpaint_actions { justify-content: flex-start; }
#txt2img_generate, #img2img_generate, #inpaint_generate,
#txt2img_seed_row button, #img2img_seed_row button, #inpaint_seed_row button {
  height: 2.6em; align-self: flex-end; margin-bottom: 0.35em;
}

/* Token counters in the top-right corner of each prompt box, as in A1111. */
.prompt-box { position: relative; }
.token-counter {
  position: absolute; top: 0.35em; right: 0.6em; z-index: 10; pointer-events: none;
  min-height: 0 !important; padding: 0 !important; border: none !important; background: none !important;
}
.token-count {
  font-size: 0.8em; font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued);
  background: var(--block-background-fill); padding: 0.05em 0.4em; border-radius: 4px; opacity: 0.85;
}

/* Extra networks: small fixed-size cards, not a stretched gallery. */
.extra-gallery .grid-container {
  grid-template-columns: repeat(auto-fill, 140px) !important; justify-content: start;
}
.extra-gallery .thumbnail-item { width: 140px; height: 140px; aspect-ratio: 1 / 1; }

/* img2img / Inpaint: the "Send to" buttons sit in one compact row under the gallery. */
#txt2img_send_row, #img2img_send_row, #inpaint_send_row { gap: 0.4em; }

/* Our own progress bar (Gradio's overlay is hidden for Generate). */
.atelier-progress {
  position: relative; height: 1.8em; border-radius: 6px; overflow: hidden;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary);
}
.atelier-progress-bar {
  position: absolute; inset: 0 auto 0 0; background: var(--color-accent); opacity: 0.75;
  transition: width 0.2s linear;
}
.atelier-progress-text {
  position: relative; display: block; text-align: center; line-height: 1.8em;
  font-size: 0.9em; font-variant-numeric: tabular-nums;
}

.atelier-infotext {
  font-family: var(--font-mono); font-size: 0.85em; line-height: 1.45; white-space: normal;
  overflow-wrap: anywhere; padding: 0.6em 0.8em; border-radius: 6px;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary);
}
.atelier-msg { margin: 0.4em 0; padding: 0.5em 0.8em; border-radius: 6px; font-size: 0.9em; }
.atelier-msg-error { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd; }
.atelier-msg-info { background: #eef4fb; color: #1d3b5a; border: 1px solid #c9dcf0; }

.atelier-pnginfo { width: 100%; border-collapse: collapse; font-size: 0.9em; }
#pnginfo_parsed .atelier-pnginfo, #pnginfo_parsed .atelier-pnginfo tr { border: none !important; }
/* The id makes these win over the HTML component's own table borders. */
#pnginfo_parsed .atelier-pnginfo th, #pnginfo_parsed .atelier-pnginfo td {
  border-style: solid !important; border-width: 0 0 1px 0 !important;
  border-color: var(--border-color-primary) !important;
  text-align: left; vertical-align: top; padding: 0.3em 0.6em; overflow-wrap: anywhere;
}
.atelier-pnginfo th { white-space: nowrap; width: 1%; }
"""
