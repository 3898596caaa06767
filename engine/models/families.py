"""Model families as adapters: what differs between SD 1.x, SD 2.x, SDXL and the SDXL refiner is
said here once, and every stage reads it from `family_of(model)` instead of testing names.

A family says where its text encoders sit in a single file and which tokenizer pad each wants,
which hidden layer the UNet was trained on (SD1/2: the last, through the final layer norm; SDXL:
the penultimate, without it), whether the UNet also takes the last encoder's pooled projection and
which micro-conditioning (SDXL's sizes, the refiner's aesthetic score) goes with it, the shipped
config folder that builds a bare single file, and the sizes the UI proposes. An SDXL inpainting
checkpoint is the SDXL family with a 9-channel UNet, as SD 1.x inpainting is SD 1.x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SD1, SD2, SDXL, SDXL_REFINER, SD3, FLUX = "sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux"
# The SDXL refiner's aesthetic scores (prompt, negative prompt): A1111's defaults, and Settings'.
AESTHETIC_SCORES = (6.0, 2.5)

# The SDXL training buckets (width, height) A1111/Forge users pick from, at 1024² area.
SDXL_BUCKETS = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344),
                (1536, 640), (640, 1536))  # fmt: skip


@dataclass(frozen=True)
class EncoderSlot:
    """One text encoder of a family."""

    component: str  # diffusers subfolder and LoadedModel attribute: "text_encoder" | "text_encoder_2"
    ldm_prefix: str  # where its weights sit in a single file
    open_clip: bool  # OpenCLIP key layout in single files (fused q/k/v), else transformers' CLIP names
    pad_token: str  # OpenCLIP pads with "!" after the end token, OpenAI CLIP with the end token
    with_projection: bool  # CLIPTextModelWithProjection: gives the pooled embedding SDXL's UNet takes
    kind: str = "clip"  # "clip": A1111's 75-token chunks with emphasis; "t5": T5's token sequence
    pooled: bool | None = None  # gives the pooled embedding; None: when it has a projection (SDXL, SD 3)

    @property
    def gives_pooled(self) -> bool:
        return self.with_projection if self.pooled is None else self.pooled


_CLIP_PAD, _OPEN_CLIP_PAD = "<|endoftext|>", "!"


@dataclass(frozen=True)
class Family:
    name: str
    label: str  # as the UI and errors name it
    config: str  # shipped `models/configs/<config>/` for single files without their own config
    encoders: tuple[EncoderSlot, ...]
    native_layer: int  # 1: the last hidden layer; 2: the penultimate (CLIP skip below it is ignored)
    final_norm: bool  # the chosen hidden layer goes through the final layer norm
    pooled: bool  # the UNet takes the last encoder's pooled projection (`added_cond_kwargs`)
    micro: str | None  # None | "size" (SDXL: original size, crop, target size) | "aesthetic" (refiner)
    zero_empty_negative: bool  # an empty negative prompt is all zeros (A1111 and diffusers on SDXL)
    context_dims: tuple[int, ...]  # the real models' cross-attention width, for messages
    latents: str  # the latent space its VAE makes: a refiner or VAE must share it ("sd" | "sdxl" | "sd3")
    # The denoising network and how it is called (engine.pipeline.networks): "unet" (SD 1.x/2.x,
    # SDXL) or "sd3" (the MMDiT of SD 3 / 3.5).
    network: str = "unet"
    # Rectified-flow families: their σ table's default shift (the checkpoint's scheduler config may
    # say otherwise) and the factor from σ to the network's timestep. None: a discrete ε/v model.
    flow_shift: float | None = None
    timestep_scale: float = 1000.0
    sequence_tokens: int = 256  # a T5 encoder's tokens per chunk (SD 3: the reference's 256)
    clip_in_sequence: bool = True  # CLIP's hidden states lead the token sequence (SD 3); Flux: T5's alone
    native_size: int | None = None  # where the network's config does not say it (Flux: 1024 px)
    # What choosing such a checkpoint proposes in the generation tabs (as Forge's presets do):
    # its CFG scale (Flux: 1, its guidance being distilled), and the steps of a family member
    # without a guidance input, which is the step-distilled one (Flux schnell: 4).
    proposed_cfg: float | None = None
    step_distilled_steps: int | None = None

    @property
    def flow(self) -> bool:
        return self.flow_shift is not None

    def sizes(self, native: int) -> list[tuple[int, int]]:
        """(width, height) choices for the size picker: the SDXL buckets scaled to this model's
        native resolution (multiples of 8), so a 512 model gets 512², 576×448, ..."""
        scale = native / 1024
        return [(round(w * scale / 8) * 8, round(h * scale / 8) * 8) for w, h in SDXL_BUCKETS]

    def added_cond(
        self,
        pooled: torch.Tensor | None,
        rows: int,
        height: int,
        width: int,
        uncond_count: int,
        aesthetic: tuple[float, float] = AESTHETIC_SCORES,
    ) -> dict[str, object]:
        """The UNet's extra inputs besides the token sequence, for a batch of `rows` at a picture
        size of height × width px. SDXL: the pooled embedding and the time ids (original size =
        target size = the picture's, crop 0,0, as A1111 sets them); the refiner: size, crop and
        the aesthetic score, high for the conditional rows and low for the leading `uncond_count`
        unconditional rows (`aesthetic`: (high, low), A1111's 6.0 / 2.5 unless the Settings say)."""
        if self.micro is None:
            return {}
        if pooled is None:
            raise ValueError(f"{self.label} needs a pooled text embedding")
        if self.micro == "size":
            ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).repeat(rows, 1)
        else:
            high, low = aesthetic
            scores = torch.full((rows, 1), high)
            scores[:uncond_count] = low
            size = torch.tensor([[height, width, 0, 0]], dtype=torch.float32).repeat(rows, 1)
            ids = torch.cat([size, scores], dim=1)
        ids = ids.to(device=pooled.device, dtype=pooled.dtype)
        return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}

    @property
    def time_ids(self) -> int:
        """How many micro-conditioning numbers the UNet's add embedding takes: SDXL's 6 (original
        size, crop, target size), the refiner's 5 (the aesthetic score in place of the target)."""
        return {None: 0, "size": 6, "aesthetic": 5}[self.micro]

    @property
    def wants_uncond_count(self) -> bool:
        """The refiner's rows differ between conditional and unconditional passes."""
        return self.micro == "aesthetic"


_CLIP_L_SD1 = EncoderSlot("text_encoder", "cond_stage_model.transformer.", False, _CLIP_PAD, False)
_OPEN_CLIP_H = EncoderSlot("text_encoder", "cond_stage_model.model.", True, _OPEN_CLIP_PAD, False)
_CLIP_L_XL = EncoderSlot("text_encoder", "conditioner.embedders.0.transformer.", False, _CLIP_PAD, False)
_CLIP_G_XL = EncoderSlot("text_encoder_2", "conditioner.embedders.1.model.", True, _OPEN_CLIP_PAD, True)
_CLIP_G_REFINER = EncoderSlot("text_encoder_2", "conditioner.embedders.0.model.", True, _OPEN_CLIP_PAD, True)

_CLIP_L_SD3 = EncoderSlot("text_encoder", "text_encoders.clip_l.transformer.", False, _CLIP_PAD, True)
_CLIP_G_SD3 = EncoderSlot("text_encoder_2", "text_encoders.clip_g.transformer.", False, _OPEN_CLIP_PAD, True)
_T5_SD3 = EncoderSlot("text_encoder_3", "text_encoders.t5xxl.transformer.", False, "<pad>", False, kind="t5")

_CLIP_L_FLUX = EncoderSlot(
    "text_encoder", "text_encoders.clip_l.transformer.", False, _CLIP_PAD, False, pooled=True
)
_T5_FLUX = EncoderSlot("text_encoder_2", "text_encoders.t5xxl.transformer.", False, "<pad>", False, kind="t5")

_SD = dict(native_layer=1, final_norm=True, pooled=False, micro=None, zero_empty_negative=False, latents="sd")
_XL = dict(native_layer=2, final_norm=False, pooled=True, zero_empty_negative=True, latents="sdxl")
FAMILIES: dict[str, Family] = {
    SD1: Family(SD1, "SD 1.x", "sd1", (_CLIP_L_SD1,), context_dims=(768,), **_SD),
    SD2: Family(SD2, "SD 2.x", "sd2", (_OPEN_CLIP_H,), context_dims=(1024,), **_SD),
    SDXL: Family(SDXL, "SDXL", "sdxl", (_CLIP_L_XL, _CLIP_G_XL), micro="size", context_dims=(2048,), **_XL),
    SDXL_REFINER: Family(
        SDXL_REFINER,
        "SDXL refiner",
        "sdxl-refiner",
        (_CLIP_G_REFINER,),
        micro="aesthetic",
        context_dims=(1280,),
        **_XL,
    ),  # fmt: skip
    # SD 3 / 3.5: CLIP-L and CLIP-G side by side (penultimate layers, both pooled), then T5-XXL's
    # tokens after them in the sequence; an MMDiT on 16-channel latents, rectified flow, shift 3.
    SD3: Family(
        SD3,
        "SD 3",
        "sd3",
        (_CLIP_L_SD3, _CLIP_G_SD3, _T5_SD3),
        native_layer=2,
        final_norm=False,
        pooled=True,
        micro=None,
        zero_empty_negative=False,
        context_dims=(4096,),
        latents="sd3",
        network="sd3",
        flow_shift=3.0,
    ),
    # Flux.1 (dev, schnell): CLIP-L gives only its pooled output, T5-XXL's 512 tokens are the whole
    # sequence; a 2×2-patch transformer on 16-channel latents, guidance distilled into an input
    # (dev), rectified flow with a shift that grows with the picture's size (the scheduler config).
    FLUX: Family(
        FLUX,
        "Flux",
        "flux",
        (_CLIP_L_FLUX, _T5_FLUX),
        native_layer=1,
        final_norm=True,
        pooled=True,
        micro=None,
        zero_empty_negative=False,
        context_dims=(4096,),
        latents="flux",
        network="flux",
        flow_shift=1.0,
        timestep_scale=1.0,
        sequence_tokens=512,
        clip_in_sequence=False,
        native_size=1024,
        proposed_cfg=1.0,
        step_distilled_steps=4,
    ),
}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}") from None


def family_of_keys(keys) -> Family:
    """The family whose text encoders a single file's keys hold (A1111's and diffusers' rules: the
    second SDXL embedder is OpenCLIP-G; the refiner has only that one, as embedder 0)."""
    keys = list(keys)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    found = [
        f
        for f in (FAMILIES[SDXL], FAMILIES[SDXL_REFINER], FAMILIES[SD2], FAMILIES[SD1])
        if has(f.encoders[-1].ldm_prefix)
    ]
    if len(found) > 1:
        names = " and ".join(f.label for f in found)
        raise ValueError(f"holds the text encoders of both {names}: a mixed or broken checkpoint")
    if not found:
        raise ValueError(
            "is not a Stable Diffusion checkpoint (no SD 1.x/2.x or SDXL text encoder keys found)"
        )
    chosen = found[0]
    for slot in chosen.encoders:
        if not has(slot.ldm_prefix):
            raise ValueError(f"is an incomplete {chosen.label} checkpoint (no {slot.ldm_prefix}* weights)")
    return chosen
