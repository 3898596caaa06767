"""Puts a model's parts where its memory plan says (engine.models.memory_plan), and moves them on use.

- `gpu-only`: every part on the device.
- `medvram`: parts in named groups ("text", "unet", "vae", and a refiner's); a forward pre-hook
  on each part and on its direct children (the VAE is entered through `decode`/`encode` and its
  submodules, not its `forward`) brings that group to the device and sends the group there before
  it back to RAM. So the pipeline code is the same under every plan: it calls the modules, the
  hooks move them.
- `lowvram`: diffusers' group offloading at leaf level on every part (each layer onloaded when it
  runs). Without CUDA streams: streams keep pinned copies of the weights taken when offloading is
  applied, which would hide the in-place LoRA patches made afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from engine.models.memory_plan import GPU_ONLY, LOWVRAM, MEDVRAM

log = logging.getLogger(__name__)

_GROUP_OFFLOAD_HOOKS = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


def _move(module: Any, device: torch.device) -> None:
    torch.nn.Module.to(module, device)  # (diffusers' ModelMixin.to logs on every dtype-less call)


class Residency:
    """Where one model's parts live between uses. `device`: where they compute; `storage`: RAM."""

    def __init__(self, device: torch.device, storage: torch.device | None = None):
        self.device = device
        self.storage = storage or torch.device("cpu")
        self.plan = GPU_ONLY
        self.active: str | None = None  # medvram: the group on the device now
        self.moves = 0  # medvram's group moves so far (for tests and logs)
        self._groups: dict[str, list[Any]] = {}
        self._handles: list[Any] = []

    def apply(self, plan: str, groups: dict[str, list[Any]]) -> None:
        """Place `groups` (name → modules; None entries skipped) for `plan`, undoing the last plan.
        A part of the last plan's groups that is not in `groups` (the refiner of the last job)
        goes back to RAM: the job in hand gets the device."""
        groups = {name: [m for m in modules if m is not None] for name, modules in groups.items()}
        if plan == self.plan and groups == self._groups:
            return
        if plan not in (GPU_ONLY, MEDVRAM, LOWVRAM):
            raise ValueError(f"unknown memory plan {plan!r}")
        kept = {id(m) for group in groups.values() for m in group}
        dropped = [m for group in self._groups.values() for m in group if id(m) not in kept]
        self._undo()
        for module in dropped:
            _move(module, self.storage)
        self.plan, self._groups, self.active = plan, {}, None
        for name, group in groups.items():
            for module in group:
                self.add(name, module)
        log.info("memory plan %s on %s", plan, self.device)

    def add(self, name: str, module: Any) -> None:
        """Place one module of group `name` under the current plan (also a ControlNet a job adds
        beside the UNet)."""
        if any(module is m for m in self._groups.get(name, [])):
            return
        self._groups.setdefault(name, []).append(module)
        if self.plan == GPU_ONLY:
            _move(module, self.device)
        elif self.plan == MEDVRAM:
            _move(module, self.device if self.active == name else self.storage)
            self._hook(module, name)
        else:
            from diffusers.hooks.group_offloading import apply_group_offloading

            _move(module, self.storage)
            apply_group_offloading(
                module, onload_device=self.device, offload_device=self.storage, offload_type="leaf_level"
            )

    def use(self, name: str) -> None:
        """medvram: bring group `name` to the device, the group there before it back to RAM."""
        if self.active == name:
            return
        for other, group in self._groups.items():
            if other == self.active:
                for module in group:
                    _move(module, self.storage)
        for module in self._groups.get(name, []):
            _move(module, self.device)
        self.active = name
        self.moves += 1

    def _hook(self, module: Any, name: str) -> None:
        def before(_module: Any, _args: Any) -> None:
            self.use(name)

        for part in (module, *module.children()):
            self._handles.append(part.register_forward_pre_hook(before))

    def _undo(self) -> None:
        """The last plan's hooks off; the parts stay where they are (the next plan places them)."""
        from diffusers.hooks import HookRegistry

        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.plan == LOWVRAM:
            for module in (m for group in self._groups.values() for m in group):
                registry = HookRegistry.check_if_exists_or_initialize(module)
                for hook in _GROUP_OFFLOAD_HOOKS:
                    registry.remove_hook(hook, recurse=True)
        self._groups, self.plan, self.active = {}, GPU_ONLY, None
