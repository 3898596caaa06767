"""Loading `.ckpt` / `.pt` pickles without letting them run code.

A pickle can call any importable function while it loads (`__reduce__`), so a downloaded `.ckpt`
is a program. We only ever load one through `torch.load(weights_only=True)`, torch's restricted
unpickler that allows tensors, storages and plain containers. On top of that we allow a few
harmless globals that real SD checkpoints contain (A1111's `safe.py` allowed the same ones):
numpy scalars/dtypes (e.g. `global_step`) and PyTorch Lightning's `ModelCheckpoint` callback state,
which is swapped for an inert placeholder. Anything else fails with a ValueError before it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class _InertPlaceholder:
    """Stands in for training-time objects (Lightning callbacks) we never use; keeps no state."""

    def __setstate__(self, state: Any) -> None:
        pass


def _numpy_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:
        return []
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Any] = [np.dtype, np.ndarray]
    # Register under both module names: numpy 1.x pickles say numpy.core, numpy 2.x numpy._core.
    # `_reconstruct` rebuilds plain arrays (torch's docs allow it); their items stay restricted.
    for fn in (multiarray.scalar, multiarray._reconstruct):
        allowed += [
            (fn, f"numpy.core.multiarray.{fn.__name__}"),
            (fn, f"numpy._core.multiarray.{fn.__name__}"),
        ]
    # numpy 2 rebuilds a dtype as an instance of its per-type class (numpy.dtypes.Float64DType, ...).
    allowed += [
        cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)
    ]
    return allowed


def _extra_safe_globals() -> list[Any]:
    return [
        (_InertPlaceholder, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
        (_InertPlaceholder, "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
        *_numpy_globals(),
    ]


def load_pickle_checkpoint(path: Path) -> Any:
    """Unpickle a `.ckpt`/`.pt` file with torch's weights-only unpickler; never executes its code."""
    try:
        with torch.serialization.safe_globals(_extra_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _reason(exc)
        if "GLOBAL" in reason:  # e.g. "Unsupported global: GLOBAL posix.system"
            raise ValueError(
                f"refused to load {path.name}: the pickle references {reason.split('GLOBAL')[-1].strip()}, "
                "which is not plain weights and could run code. Nothing from it was executed; convert it "
                f"to .safetensors with a tool you trust. ({reason})"
            ) from exc
        raise ValueError(
            f"cannot read {path.name}: corrupt, or a pickle feature the safe loader does not allow "
            f"(nothing from it was executed): {reason}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"cannot read {path.name}: not a valid PyTorch checkpoint ({_first_line(exc)})"
        ) from exc


def _reason(exc: BaseException) -> str:
    """The informative line of torch's long weights-only error (which global or opcode it refused)."""
    for line in str(exc).splitlines():
        if "Unsupported" in line or "GLOBAL" in line:
            return line.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "").strip()
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
