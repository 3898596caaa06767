"""Tiny seeded SD 3 components for CPU tests, written as a diffusers folder.

SD 3's architecture in small: an MMDiT (`SD3Transformer2DModel`) on 16-channel latents, CLIP-L and
CLIP-G stand-ins (two widths, both with projections: SD 3 pools both), a tiny T5 encoder with a T5
tokenizer built offline (a `tokenizers` Unigram model: T5's real vocabulary cannot be generated
without the user's files), and SD 3's VAE conventions (scaling and shift factor, no quant convs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from tests.fakes.tiny_models import CLIP_G_WIDTH, CLIP_L_WIDTH, _clip_config, _tiny_vae

T5_WIDTH = 32  # = the MMDiT's joint attention width, as in SD 3 (4096 there)
# Enough words for the prompts tests write; anything else falls back to single letters.
WORDS = (
    "a an the large small red green blue yellow white black circle square triangle at top bottom "
    "left right centre center middle on of in background picture photo cat dog tree sky sun "
    "blurry ugly bright dark"
).split()


@lru_cache(maxsize=1)
def t5_tokenizer() -> Any:
    """A T5TokenizerFast over a small Unigram vocabulary: "<pad>" 0, "</s>" 1, "<unk>" 2 as in T5,
    "▁word" pieces for `WORDS` and every letter, and T5's "append </s>" post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"▁{word}", -1.0) for word in WORDS]
    letters = "abcdefghijklmnopqrstuvwxyz0123456789.,:()!"
    pieces += [(f"▁{c}", -8.0) for c in letters] + [(c, -9.0) for c in letters] + [("▁", -10.0)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=256,
    )


def _flow_vae(scaling: float, shift: float) -> Any:
    """SD 3's and Flux's VAE in small: 16 latent channels, a scaling and a shift factor, no quant
    convolutions; the factors are the real models'."""
    return _tiny_vae(
        16, scaling_factor=scaling, shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False
    )


def _tiny_t5(vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size, d_model=T5_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    )  # fmt: skip


def tiny_sd3_components(seed: int = 0, with_t5: bool = True) -> dict[str, Any]:
    """The components of diffusers' StableDiffusion3Pipeline, tiny and seeded."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    from engine.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=16,
        pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
        pos_embed_max_size=16,
    )
    vae = _flow_vae(scaling=1.5305, shift=0.0609)
    clip_l = CLIPTextModelWithProjection(_clip_config(CLIP_L_WIDTH, "quick_gelu", layers=3))
    clip_g = CLIPTextModelWithProjection(_clip_config(CLIP_G_WIDTH, "gelu", layers=3))
    tokenizer_3 = t5_tokenizer()
    t5 = _tiny_t5(len(tokenizer_3)) if with_t5 else None
    for module in (transformer, vae, clip_l, clip_g, t5):
        if module is not None:
            module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": clip_l,
        "tokenizer": load_clip_tokenizer("<|endoftext|>"),
        "text_encoder_2": clip_g,
        "tokenizer_2": load_clip_tokenizer("!"),
        "text_encoder_3": t5,
        "tokenizer_3": tokenizer_3 if with_t5 else None,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


def write_tiny_sd3(folder: Path, seed: int = 0, with_t5: bool = True) -> Path:
    """A diffusers SD 3 folder (model_index.json, each component in its subfolder, safetensors)."""
    from diffusers import StableDiffusion3Pipeline

    StableDiffusion3Pipeline(**tiny_sd3_components(seed, with_t5)).save_pretrained(folder)
    return folder


def tiny_flux_components(seed: int = 0, guidance: bool = True) -> dict[str, Any]:
    """The components of diffusers' FluxPipeline, tiny and seeded: dev (`guidance`: the distilled
    guidance input, a size-dependent shift) or schnell (neither)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from engine.models.tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels × a 2×2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_L_WIDTH,
        guidance_embeds=guidance,
        axes_dims_rope=(4, 6, 6),
    )
    vae = _flow_vae(scaling=0.3611, shift=0.1159)
    clip_l = CLIPTextModel(_clip_config(CLIP_L_WIDTH, "quick_gelu", layers=2))
    tokenizer_2 = t5_tokenizer()
    t5 = _tiny_t5(len(tokenizer_2))
    for module in (transformer, vae, clip_l, t5):
        module.eval()
    if guidance:  # Flux dev's scheduler: the shift follows the picture's size
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )  # fmt: skip
    else:  # schnell: shift 1
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": clip_l,
        "tokenizer": load_clip_tokenizer("<|endoftext|>"),
        "text_encoder_2": t5,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler,
    }


def write_tiny_flux(folder: Path, seed: int = 0, guidance: bool = True) -> Path:
    """A diffusers Flux folder (model_index.json, each component in its subfolder, safetensors)."""
    from diffusers import FluxPipeline

    FluxPipeline(**tiny_flux_components(seed, guidance)).save_pretrained(folder)
    return folder
