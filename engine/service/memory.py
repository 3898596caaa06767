"""Memory as the job queue sees it: running out of it, and how much of the GPU a job used.

Running out of memory is a request too large for this machine, not a bug: the queue turns it into
`OutOfMemory`, whose message says what to try, frees what the job held and goes on with the next
job. The readings of the GPU's memory are small functions so tests can stand in for a GPU.
"""

from __future__ import annotations

import torch

# What running out of memory raises: torch's allocators (`torch.cuda.OutOfMemoryError` is this
# class; recent torch raises it for the CPU allocator too) and Python itself.
OUT_OF_MEMORY_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)

# What to try, by the kind of job that ran out. Only remedies this app offers: a setting is named by
# its label and (key), as the Settings tab shows it, and tests check the keys exist; a start flag
# belongs here once the command line has it.
_GENERATION_REMEDIES = (
    "a smaller size or batch, fewer ControlNet units, a lower hires fix upscale, VAE in strips "
    "(vae_tiling) on auto or always in Settings, or a lighter memory plan (memory_plan) in Settings "
    "or with --medvram / --lowvram; on auto the next job's plan is already one step lighter"
)
_REMEDIES = {
    "load": "another checkpoint, or closing other programs that use the GPU; on a small GPU start with "
    "--lowvram",
    "extras": "a smaller picture or upscale factor, or a smaller Upscaler tile size (ESRGAN_tile) in "
    "Settings",
    "preprocessor": "a lower preprocessor resolution or a smaller control picture",
}
GIB = 2**30


class OutOfMemory(MemoryError):
    """A job ran out of memory. Its message names what to try; what the job held was freed and the
    queue went on. The UI shows the message as it is; the API answers 507 (see api/routes/common)."""


def out_of_memory(kind: str, error: BaseException) -> OutOfMemory:
    """The error a `kind` job ("txt2img", "img2img", "extras", "load", "preprocessor") ends with
    when `error` (one of OUT_OF_MEMORY_ERRORS) stopped it. It keeps only the text of `error`: its
    traceback holds the stage's tensors, which must be freed."""
    detail = _first_sentences(str(error))
    cause = f" ({detail})" if detail else ""
    remedies = _REMEDIES.get(kind, _GENERATION_REMEDIES)
    return OutOfMemory(
        f"Out of memory during {kind}{cause}. The job stopped and its memory was freed; pictures "
        f"already saved are kept. Try {remedies}."
    )


def _first_sentences(text: str, count: int = 2) -> str:
    """The start of torch's message ("CUDA out of memory. Tried to allocate 2.00 GiB"): the rest is
    the allocator's statistics and tuning advice, which belong in the log, not in the form."""
    lines = text.strip().splitlines()
    if not lines:
        return ""
    return ". ".join(lines[0].split(". ")[:count]).rstrip(".")


def _on_cuda(device: torch.device | None) -> bool:
    return device is not None and device.type == "cuda" and torch.cuda.is_available()


def reset_peak_memory(device: torch.device | None) -> None:
    """Start measuring a job's peak from now (CUDA only: the CPU and MPS keep no such count)."""
    if _on_cuda(device):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device | None) -> float | None:
    """The most GPU memory tensors held since `reset_peak_memory`, in GiB; None off CUDA."""
    if not _on_cuda(device):
        return None
    return torch.cuda.max_memory_allocated(device) / GIB


def peak_memory_note(gib: float | None) -> str | None:
    """The line a finished job's notes carry; None when there is no reading (a CPU-only run)."""
    return None if gib is None else f"Peak GPU memory: {gib:.2f} GiB"
