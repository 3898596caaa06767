"""Jobs: progress, ETA, live preview, interrupt and skip — carried on an object, not in globals
(docs/design.md, example 8). The UI (and later the API) polls a Job while a worker thread runs it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.models.families import AESTHETIC_SCORES
from engine.models.manager import release_memory
from engine.service import memory

if TYPE_CHECKING:
    import torch

    from engine.plugins.hooks import GenerationContext, HookRunner

log = logging.getLogger(__name__)


class JobInterrupted(Exception):
    """Raised inside the sampling loop when the user interrupts: the job stops after this step."""


class JobSkipped(Exception):
    """Raised inside the sampling loop when the user skips: the current batch is abandoned and the
    job moves on to the next batch (A1111's Skip)."""


@dataclass
class Progress:
    job_step: int = 0  # steps done over the whole job (all batches)
    job_steps: int = 0
    batch: int = 0  # 0-based index of the batch being sampled
    batches: int = 0
    started: float = field(default_factory=time.monotonic)
    textinfo: str = ""

    @property
    def fraction(self) -> float:
        return self.job_step / self.job_steps if self.job_steps else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Remaining time from the average speed so far (None before the first step)."""
        if not self.job_step or not self.job_steps:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.job_step * (self.job_steps - self.job_step)


class Job:
    """One generation request in flight. Thread-safe flags; the worker reports, others read."""

    def __init__(self, kind: str = "txt2img", preview_every: int = 0, preview_kind: str = "Approx cheap"):
        self.kind = kind
        self.preview_every = preview_every  # a preview every N steps (0 = never)
        self.preview_kind = preview_kind  # "Approx cheap" (no VAE) or "Full" (engine.pipeline.preview)
        self.progress = Progress()
        self.preview: Any = None  # PIL image of the latest preview
        self.preview_step = -1
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self._done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        # The extension hooks of this job (None: no extensions) and the GenerationContext of the
        # generation running now (set by the pipeline, engine.plugins.firing).
        self.hooks: HookRunner | None = None
        self.context: GenerationContext | None = None
        self.queue: JobQueue | None = None  # set when submitted: the job can say where it waits
        # Jobs running or waiting when it was queued: whether it had to wait, known at once (its
        # position() just after submit cannot tell a job about to start from one that waits).
        self.queued_behind = 0
        # The SDXL refiner's (prompt, negative) aesthetic scores: the Settings' when it was submitted.
        self.aesthetic_scores: tuple[float, float] = AESTHETIC_SCORES

    def position(self) -> int:
        """0 while running (or done), 1.. while waiting in the queue (1 = next)."""
        return max(0, self.queue.position(self)) if self.queue is not None else 0

    # -- control, from the UI / API thread --------------------------------------------------------
    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    # -- reporting, from the worker ---------------------------------------------------------------
    def begin(self, batches: int, steps_per_batch: int) -> None:
        # The text a script set ("X/Y/Z plot: cell 3 of 12") stays across its generations.
        textinfo = self.progress.textinfo
        self.progress = Progress(job_steps=batches * steps_per_batch, batches=batches, textinfo=textinfo)

    def check(self) -> None:
        """Raise if the user asked to stop; called between steps."""
        if self._interrupt.is_set():
            raise JobInterrupted()
        if self._skip.is_set():
            self._skip.clear()
            raise JobSkipped()

    def step_done(self) -> None:
        self.progress.job_step += 1

    def wants_preview(self, step: int) -> bool:
        return self.preview_every > 0 and (step + 1) % self.preview_every == 0

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class JobQueue:
    """One FIFO worker: jobs run one at a time in submission order; a failing job is recorded on
    its Job and never stops the next one. The UI (and later the API) share one queue.

    It is the one place every job runs, so what concerns all of them is done here: a job that runs
    out of memory ends with `memory.OutOfMemory` and its memory is freed before the next one
    starts, and on CUDA a job's notes end with its peak GPU memory. `device`: where the jobs run."""

    def __init__(
        self, device: torch.device | None = None, on_out_of_memory: Callable[[], None] | None = None
    ) -> None:
        self.device = device
        self._on_out_of_memory = on_out_of_memory  # the model manager lightens the next memory plan
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[Job] = []
        self._lock = threading.Lock()
        self.current: Job | None = None
        self._worker = threading.Thread(target=self._run, name="atelier-jobs", daemon=True)
        self._worker.start()

    def submit(self, job: Job, fn, *args, **kwargs) -> Job:
        """Queue fn(*args, job=job, **kwargs); its return value becomes job.result."""
        job.queue = self
        with self._lock:
            job.queued_behind = len(self._pending) + (self.current is not None)
            self._pending.append(job)
        self._queue.put((job, fn, args, kwargs))
        return job

    def position(self, job: Job) -> int:
        """0 while running, 1.. while waiting, -1 when not queued."""
        with self._lock:
            if job is self.current:
                return 0
            return self._pending.index(job) + 1 if job in self._pending else -1

    def pending(self) -> int:
        """How many jobs wait behind the current one."""
        with self._lock:
            return len(self._pending)

    def in_worker(self) -> bool:
        """Whether the caller is a job running now: waiting for a job it queued would never end."""
        return threading.current_thread() is self._worker

    def _run(self) -> None:
        while True:
            job, fn, args, kwargs = self._queue.get()
            with self._lock:
                self._pending.remove(job)
                self.current = job
            try:
                self._run_one(job, fn, args, kwargs)
            finally:
                with self._lock:
                    self.current = None

    def _run_one(self, job: Job, fn, args, kwargs) -> None:
        """Run one job and record its outcome on it; never raises, so the worker outlives any job."""
        try:
            if job.interrupted:  # cancelled while waiting
                raise JobInterrupted()
            memory.reset_peak_memory(self.device)
            result = fn(*args, job=job, **kwargs)
            _add_note(result, memory.peak_memory_note(memory.peak_memory_gib(self.device)))
        except memory.OUT_OF_MEMORY_ERRORS as exc:
            log.warning("a %s job ran out of memory:\n%s", job.kind, traceback.format_exc())
            error = memory.out_of_memory(job.kind, exc)
            if self._on_out_of_memory is not None:
                self._on_out_of_memory()
        except BaseException as exc:  # reported through the job, never swallowed
            _forget_context(job)
            job.finish(error=exc)
            return
        else:
            _forget_context(job)
            job.finish(result=result)
            return
        # Freed here, after the except block: until it ended, the exception's traceback kept every
        # frame of the failed stage alive, tensors included. The job's context goes too (extensions
        # keep per-job state there). All before finish(): whoever waits for the job may send the
        # next one at once, and it must find the memory free.
        _forget_context(job)
        try:
            release_memory(self.device)
        except Exception:  # a device in a bad state must not stop the queue as well
            log.exception("freeing memory after a job ran out of it failed")
        job.finish(error=error)


def _forget_context(job: Job) -> None:
    """Drop the finished job's GenerationContext: it holds the job's model, and a Job outlives its
    run (the UI and the API keep it to read the result), so a checkpoint loaded next would
    otherwise share the memory with the one it replaced. Extensions keep per-job state there too."""
    job.context = None


def _add_note(result: Any, note: str | None) -> None:
    """Append `note` to a job result's notes (GenerationResult, ExtrasResult and BatchReport have
    them; the UI shows them under the gallery, the API in `info`)."""
    notes = getattr(result, "notes", None)
    if note is not None and isinstance(notes, list):
        notes.append(note)
