"""Write the trained EMA weights as the shipped built-in model: an fp16 SD single-file checkpoint
plus its `<stem>.config/` sidecar of diffusers configs — the layout a user's checkpoint has."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from engine.models.builtin import SCHEDULER, build_builtin_modules, builtin_paths
from engine.models.configs import write_config_folder
from engine.models.coord_unet import grow_conv_in
from engine.models.ldm_convert import save_sd_checkpoint
from training.common import load_state


def trained_modules(run_dir: Path, build=build_builtin_modules):
    """(unet, vae, text_encoder) with the run's EMA weights and the measured latent scale;
    `build` makes the untrained modules (tests pass a tiny architecture)."""
    unet, vae, text_encoder = build()
    vae_state = load_state(run_dir / "vae_state.pt")
    diffusion_state = load_state(run_dir / "diffusion_state.pt")
    if vae_state is None or diffusion_state is None:
        raise FileNotFoundError(f"{run_dir} lacks vae_state.pt or diffusion_state.pt: train first")
    vae.load_state_dict(vae_state["ema"])
    unet.load_state_dict(grow_conv_in(diffusion_state["ema_unet"], unet))
    text_encoder.load_state_dict(diffusion_state["ema_text_encoder"])
    vae.register_to_config(scaling_factor=float(diffusion_state["scale"]))
    return unet.eval(), vae.eval(), text_encoder.eval()


def export_builtin(run_dir: Path, folder: Path | None = None, build=build_builtin_modules) -> Path:
    """Write into `folder` (default: the app's models/builtin/); returns the weights file."""
    unet, vae, text_encoder = trained_modules(run_dir, build)
    weights, sidecar = builtin_paths()
    if folder is not None:
        weights, sidecar = folder / weights.name, folder / sidecar.name
    weights.parent.mkdir(parents=True, exist_ok=True)
    # The sidecar holds configs only: the tokenizer is generated from the BPE file at load time.
    tmp = Path(tempfile.mkdtemp(dir=weights.parent, prefix=".export-"))
    try:
        write_config_folder(tmp / "cfg", unet, vae, text_encoder, SCHEDULER, "sd1", with_tokenizer=False)
        shutil.rmtree(sidecar, ignore_errors=True)
        shutil.move(str(tmp / "cfg"), str(sidecar))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return save_sd_checkpoint(weights, unet, vae, text_encoder, "sd1", dtype=torch.float16)


BUILTIN_CONTROLNET = "atelier-tiny-canny"


def export_controlnet(run_dir: Path, unet, folder: Path | None = None) -> Path:
    """The canny ControlNet's EMA weights as an fp16 single file in the LDM layout A1111 users'
    ControlNets have (`control_model.*`), in models/builtin/ControlNet/ by default. `unet`: the
    base model's UNet, which gives the ControlNet its shape."""
    from safetensors.torch import save_file

    from engine.models.ldm_convert import controlnet_to_ldm
    from training.controlnet_stage import STATE_FILE, make_controlnet

    state = load_state(run_dir / STATE_FILE)
    if state is None:
        raise FileNotFoundError(f"{run_dir} has no {STATE_FILE}: train the controlnet stage first")
    controlnet = make_controlnet(unet)
    controlnet.load_state_dict(state["ema"])
    folder = folder or builtin_paths()[0].parent / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = controlnet_to_ldm(
        {k: v.to(torch.float16).contiguous() for k, v in controlnet.state_dict().items()},
        dict(controlnet.config),
    )
    path = folder / f"{BUILTIN_CONTROLNET}.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path
