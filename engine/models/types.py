"""Plain data types shared by the model registry, the loaders and the generation pipeline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine.models.families import EncoderSlot, Family, family
from engine.sampling.schedules import FlowSigmas, ModelSigmas

if TYPE_CHECKING:
    from engine.models.residency import Residency
    from engine.models.speed import Applied
    from engine.models.vae_probe import LatentProbe


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint found on disk (not loaded). `title` is what the UI shows and infotext names."""

    name: str  # file stem or folder name, e.g. "v1-5-pruned-emaonly"
    path: Path  # the .safetensors/.ckpt file, or the diffusers folder
    format: str  # "safetensors" | "ckpt" | "diffusers"
    size_bytes: int
    mtime: float

    @property
    def title(self) -> str:
        return self.name


@dataclass
class VaePolicy:
    """How VAE passes run, from Settings. One object shared by every model a manager hands out, so
    a changed setting reaches the refiner (which may decode a job's pictures) as well."""

    tiling: str = "auto"  # "auto" (in strips when the whole picture would not fit) | "always" | "never"


@dataclass
class LoadedModel:
    """A checkpoint in memory, ready for the stage pipeline. Owned by the model manager."""

    info: CheckpointInfo
    short_hash: str  # A1111 "Model hash": first 10 hex digits of the file's SHA-256
    family: str  # engine.models.families: "sd1" | "sd2" | "sdxl" | "sdxl-refiner" | "sd3"
    prediction_type: str  # "epsilon" | "v_prediction" | "flow"
    unet: Any  # the denoising network: diffusers UNet2DConditionModel, or SD 3's SD3Transformer2DModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel (CLIP-L, or OpenCLIP-H on SD2); None on the SDXL refiner
    tokenizer: Any  # transformers CLIPTokenizer (model_max_length=77), None where text_encoder is
    alphas_cumprod: torch.Tensor  # float32 [T] from the training schedule; empty for flow models
    device: torch.device
    dtype: torch.dtype  # UNet / text encoder dtype
    vae_dtype: torch.dtype
    vae_name: str | None = None  # VAE override file name, None = the checkpoint's own
    config_dir: Path | None = None  # diffusers config folder it was built from (VAE overrides reuse it)
    text_encoder_2: Any = None  # SDXL's OpenCLIP-G (CLIPTextModelWithProjection), as diffusers names it
    tokenizer_2: Any = None  # its tokenizer (pads with "!")
    text_encoder_3: Any = None  # SD 3's T5-XXL (transformers T5EncoderModel)
    tokenizer_3: Any = None  # its T5 tokenizer, from the user's files
    flow_shift: float | None = None  # a flow model's σ shift (its scheduler config's); None: discrete
    # Flux dev's size-dependent shift, from its scheduler config: (base shift, max shift, base
    # image tokens, max image tokens); None: the fixed `flow_shift`
    flow_dynamic: tuple[float, float, int, int] | None = None
    latent_probe: LatentProbe | None = None  # the own VAE's probe latents; None: no evidence
    vae_policy: VaePolicy = field(default_factory=lambda: VaePolicy())
    residency: Residency | None = None  # where its parts live between uses (the memory plan)
    speed: Applied | None = None  # the speed options applied to its UNet (engine.models.speed)

    def model_sigmas(self, shift: float | None = None, size: tuple[int, int] | None = None) -> ModelSigmas:
        """The σ table of the model's training discretization, which schedules and the denoiser
        read, and whose `space` says how noise is added (engine.sampling.base.NoiseSpace).
        `shift`: a flow model's shift instead of its own (the Sampler settings' override); `size`:
        the picture's (width, height), which sets Flux dev's shift."""
        if self.flow_shift is not None:
            shift = shift or self.flow_shift_at(size)
            return FlowSigmas.with_shift(shift, multiplier=self.spec.timestep_scale)
        return ModelSigmas.from_alphas_cumprod(self.alphas_cumprod)

    def flow_shift_at(self, size: tuple[int, int] | None) -> float:
        """A flow model's own shift for a picture of `size`: Flux dev's grows with the number of
        2×2 latent patches, linearly in log shift between its base and max token counts (as its
        reference pipeline computes μ), capped at neither end; other flow models have one shift."""
        if self.flow_dynamic is None or size is None:
            return float(self.flow_shift or 1.0)
        base_shift, max_shift, base_tokens, max_tokens = self.flow_dynamic
        width, height = size
        patch = self.vae_scale_factor * 2
        tokens = (height // patch) * (width // patch)
        slope = (max_shift - base_shift) / (max_tokens - base_tokens)
        return math.exp(base_shift + slope * (tokens - base_tokens))

    def part_groups(self) -> dict[str, list[Any]]:
        """The parts a memory plan moves, by when they run: prompt, sampling, decode. A T5 encoder
        (SD 3, Flux) is a group of its own: the largest text encoder there is, it leaves the
        device as soon as the prompt is encoded, not with the CLIP encoders."""
        encoders = [(slot, encoder) for slot, _tokenizer, encoder in self.text_encoders()]
        groups = {
            "text": [encoder for slot, encoder in encoders if slot.kind != "t5"],
            "unet": [self.unet],
            "vae": [self.vae],
        }
        t5 = [encoder for slot, encoder in encoders if slot.kind == "t5" and encoder is not None]
        if t5:
            groups["t5"] = t5
        return groups

    @property
    def spec(self) -> Family:
        """The family adapter: how this model conditions and what it proposes."""
        return family(self.family)

    def text_encoders(self) -> list[tuple[EncoderSlot, Any, Any]]:
        """(slot, tokenizer, encoder) of each text encoder, in the order the family concatenates them."""
        return [
            (slot, getattr(self, "tokenizer" + slot.component.removeprefix("text_encoder")),
             getattr(self, slot.component))
            for slot in self.spec.encoders
        ]  # fmt: skip

    @property
    def first_text_encoder(self) -> Any:
        return self.text_encoders()[0][2]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        # The VAE's, not the UNet's input width: an inpainting UNet takes 9 (latent + mask + masked image).
        return int(self.vae.config.latent_channels)

    @property
    def is_inpainting(self) -> bool:
        config = getattr(self.unet, "config", None)  # test doubles may pass a bare function
        return int(getattr(config, "in_channels", 4)) == 9

    @property
    def takes_guidance(self) -> bool:
        """The network takes distilled guidance as an input (Flux dev: "Distilled CFG Scale")."""
        return bool(getattr(getattr(self.unet, "config", None), "guidance_embeds", False))

    @property
    def native_size(self) -> int:
        """The resolution the model was trained at (UNet sample size × VAE factor)."""
        sample_size = getattr(self.unet.config, "sample_size", None)
        if sample_size is None:  # Flux's config does not say it
            return int(self.spec.native_size or 1024)
        return int(sample_size) * self.vae_scale_factor
