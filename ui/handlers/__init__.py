"""Plain functions over plain values (no Gradio components): what the generation tabs do with their
values — build the job, submit it, follow it — tested without a browser."""
