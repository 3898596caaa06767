"""Per-session job tracking and the progress bar.

Interrupt/Skip are separate Gradio events from Generate, so they need a way to find the job that
the same browser session started: a small registry keyed by Gradio's session hash, owned by one
`build_ui` call (not a module global, so two apps in one process never see each other's jobs).
"""

from __future__ import annotations

import html
import threading
from typing import Any


class SessionJobs:
    """session hash → the job that session is running (or waiting for)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Any] = {}

    def set(self, session: str, job: Any) -> None:
        with self._lock:
            self._jobs[session] = job

    def get(self, session: str) -> Any | None:
        with self._lock:
            return self._jobs.get(session)

    def clear(self, session: str, job: Any) -> None:
        """Forget the session's job, unless a newer one replaced it meanwhile."""
        with self._lock:
            if self._jobs.get(session) is job:
                del self._jobs[session]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def progress_html(progress: Any | None, *, started: bool = True, position: int = 0) -> str:
    """The bar shown above the results while a job runs.

    `progress` is an `engine.service.jobs.Progress` (job_step, job_steps, batch, batches, fraction,
    eta_seconds); it has no steps until the worker has picked the job up and loaded the model.
    `position`: the job's place in the queue shared by every tab and the API (0: running).
    """
    if position > 0:
        ahead = position  # the running job and the waiting ones before this one
        label, percent = f"In queue: {ahead} job{'s' if ahead != 1 else ''} ahead · Interrupt cancels it", 0.0
    elif progress is None or not started or not getattr(progress, "job_steps", 0):
        label, percent = "Waiting to start…", 0.0  # loading the model
    else:
        percent = 100.0 * min(1.0, max(0.0, float(progress.fraction)))
        label = f"Step {progress.job_step}/{progress.job_steps}"
        if progress.batches > 1:
            label += f" · batch {min(progress.batch + 1, progress.batches)}/{progress.batches}"
        label += f" · ETA {format_eta(progress.eta_seconds)}"
        if getattr(progress, "textinfo", ""):  # e.g. "Switched to the refiner … in 2.1 s"
            label += f" · {progress.textinfo}"
    return (
        '<div class="atelier-progress">'
        f'<div class="atelier-progress-bar" style="width:{percent:.1f}%"></div>'
        f'<span class="atelier-progress-text">{html.escape(label)} ({percent:.0f}%)</span>'
        "</div>"
    )
