"""Prompt editing, alternation and AND reach the sampling loop: the guider uses the embedding of
the current step, combines AND-ed sub-prompts by weight, and every distinct text is encoded once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.conditioning.clip import ClipEncoder
from engine.conditioning.schedule import Conditioning, ScheduledCond, encode_conditioning
from engine.pipeline.txt2img import txt2img
from engine.sampling.denoiser import CFGGuider
from engine.schema.params import GenerationParams

CPU = torch.device("cpu")


def _emb(value: float) -> torch.Tensor:
    return torch.full((1, 3, 4), value)


def _mean_denoiser(x, sigma, cond):
    """x̂₀ = the batch row's conditioning value: what the guider combined is directly visible."""
    return torch.ones_like(x) * cond.hidden.mean(dim=(1, 2)).view(-1, 1)


def test_the_step_is_read_off_sigma() -> None:
    sigmas = torch.tensor([10.0, 5.0, 2.0, 0.0])
    guider = CFGGuider.plain(_mean_denoiser, _emb(1), _emb(0), 7.0, sigmas=sigmas)
    steps = [guider.step_at(torch.tensor(s)) for s in (10.0, 7.0, 5.0, 3.0, 2.0, 0.5, 0.0)]
    assert steps == [0, 0, 1, 1, 2, 2, 2]  # a midpoint σ belongs to the step it lies in


def test_the_guider_switches_embeddings_at_end_at_step() -> None:
    cond = ScheduledCond(((1, _emb(1.0)), (3, _emb(2.0))))  # A1111: entry holds while step ≤ end
    conditioning = Conditioning(((cond, 1.0),), ScheduledCond(((3, _emb(0.0)),)))
    sigmas = torch.tensor([8.0, 6.0, 4.0, 2.0, 0.0])
    guider = CFGGuider(_mean_denoiser, conditioning, 1.0, sigmas=sigmas)  # CFG 1: x̂₀ = cond
    x = torch.zeros(1, 2)
    seen = [float(guider(x, s)[0, 0]) for s in sigmas[:-1]]
    assert seen == [1.0, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="needs the sampler's sigmas"):
        CFGGuider(_mean_denoiser, conditioning, 7.0)


def test_and_combines_sub_prompts_by_weight() -> None:
    conditioning = Conditioning(
        ((ScheduledCond(((0, _emb(1.0)),)), 1.0), (ScheduledCond(((0, _emb(3.0)),)), 0.5)),
        ScheduledCond(((0, _emb(0.5)),)),
    )
    guider = CFGGuider(_mean_denoiser, conditioning, 7.0)
    x = torch.zeros(2, 2)  # two images: each sub-prompt is expanded to the batch
    expected = 0.5 + 7.0 * (1.0 * (1.0 - 0.5) + 0.5 * (3.0 - 0.5))
    assert torch.allclose(guider(x, torch.tensor(1.0)), torch.full((2, 2), expected))
    # at CFG 1 AND still needs the negative pass: uncond + Σ w (cond − uncond)
    at_one = CFGGuider(_mean_denoiser, conditioning, 1.0)(x, torch.tensor(1.0))
    assert torch.allclose(at_one, torch.full((2, 2), 0.5 + 0.5 + 0.5 * 2.5))


class _CountingEncoder(torch.nn.Module):
    """Wraps a text encoder and records how many chunk rows it was asked to encode."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, ids, **kwargs):
        self.rows += ids.shape[0]
        return self.inner(ids, **kwargs)


def test_each_distinct_text_is_encoded_once_and_all_share_one_length(builtin_model) -> None:
    tok = builtin_model.tokenizer
    encoder = _CountingEncoder(builtin_model.text_encoder)
    long_text = ", ".join(["a red circle"] * 30)  # two chunks
    conditioning = encode_conditioning(
        ClipEncoder(tok, encoder),
        f"[a red circle:{long_text}:5] AND [a red circle|a blue star]:0.7",
        "",
        20,
        CPU,
    )
    # texts: "a red circle", the long one, "a blue star", "" -> 4 texts × 2 chunks each
    assert encoder.rows == 4 * 2
    (first, w1), (second, w2) = conditioning.cond
    assert (w1, w2) == (1.0, 0.7)
    assert [end for end, _ in first.entries] == [5, 20]
    assert len(second.entries) == 20  # alternation: one entry per step
    assert torch.equal(first.at(0).hidden, second.at(0).hidden)  # the same text is the same tensor
    shapes = {e.shape for s in (first, second, conditioning.uncond) for _, e in s.entries}
    assert shapes == {(1, 154, 64)}


def _image(model, prompt: str, **kw) -> np.ndarray:
    params = GenerationParams(prompt=prompt, steps=12, seed=11, width=128, height=128, **kw)
    return np.asarray(txt2img(model, params).images[0].convert("RGB")).astype(np.int16)


RED = "a large red circle in the center on a blue background"
GREEN = "a large green square in the center on a yellow background"


@pytest.mark.slow
def test_prompt_editing_on_the_builtin_model(builtin_model) -> None:
    plain_red = _image(builtin_model, RED)
    # switching after the last step never happens: exactly the first prompt
    assert np.array_equal(_image(builtin_model, f"[{RED}:{GREEN}:12]"), plain_red)
    plain_green = _image(builtin_model, GREEN)
    # switching after step 1 of 12: closer to the second prompt's picture than to the first's (the
    # fine-tuned model settles much of the layout in that first step, so not as close as it was)
    early = _image(builtin_model, f"[{RED}:{GREEN}:1]")
    assert 0 < np.abs(early - plain_green).mean() < np.abs(early - plain_red).mean() * 0.75
    # switching half-way gives neither plain picture
    halfway = _image(builtin_model, f"[{RED}:{GREEN}:0.5]")
    assert not np.array_equal(halfway, plain_red) and not np.array_equal(halfway, plain_green)


@pytest.mark.slow
def test_and_on_the_builtin_model(builtin_model) -> None:
    plain_red = _image(builtin_model, RED)
    # a sub-prompt of weight 0 adds nothing; two halves of one prompt are that prompt
    assert np.abs(_image(builtin_model, f"{RED} AND {GREEN}:0") - plain_red).max() <= 2
    assert np.abs(_image(builtin_model, f"{RED}:0.5 AND {RED}:0.5") - plain_red).max() <= 2
    # and a real second sub-prompt changes the picture
    assert np.abs(_image(builtin_model, f"{RED} AND {GREEN}") - plain_red).mean() > 5


def _chunks(tok, text: str, emphasis: str = "Original"):
    from engine.conditioning.tokens import tokenize_weighted

    return tokenize_weighted(tok, text, emphasis=emphasis)[0]


def test_emphasis_modes(builtin_model) -> None:
    from engine.conditioning.clip import encode_weighted

    tok, te = builtin_model.tokenizer, builtin_model.text_encoder
    weighted = _chunks(tok, "a (red:1.5) circle")
    plain = encode_weighted(te, _chunks(tok, "a red circle"), CPU)[0]
    original = encode_weighted(te, weighted, CPU, emphasis="Original")[0]
    no_norm = encode_weighted(te, weighted, CPU, emphasis="No norm")[0]
    red = 2  # BOS, "a", "red"
    assert torch.allclose(no_norm[0, red], plain[0, red] * 1.5)  # scaled, nothing else touched
    assert torch.equal(no_norm[0, red + 1], plain[0, red + 1])
    assert not torch.allclose(original, no_norm) and torch.allclose(original.mean(), plain.mean(), atol=1e-6)
    assert torch.equal(encode_weighted(te, weighted, CPU, emphasis="Ignore")[0], plain)
    # "None": brackets are words, so the tokens differ from the parsed prompt's
    literal = _chunks(tok, "a (red:1.5) circle", emphasis="None")
    assert literal[0].tokens != weighted[0].tokens and set(literal[0].weights) == {1.0}
    assert _chunks(tok, "a BREAK b", emphasis="None")[0].tokens == _chunks(tok, "a break b")[0].tokens


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(builtin_model) -> None:
    from engine.conditioning.clip import encode_weighted

    tok, te = builtin_model.tokenizer, builtin_model.text_encoder
    chunks = _chunks(tok, "a red circle")
    ids = torch.tensor([chunks[0].tokens])
    with torch.no_grad():
        states = te(ids, output_hidden_states=True).hidden_states
        expected = te.final_layer_norm(states[-2])
    assert torch.equal(encode_weighted(te, chunks, CPU, clip_skip=2)[0], expected)
    assert torch.equal(encode_weighted(te, chunks, CPU, clip_skip=1)[0], te(ids)[0])


def test_clip_skip_and_emphasis_reach_the_picture_and_the_infotext(builtin_model) -> None:
    from engine.schema.infotext import params_from_infotext

    prompt = "a large (red:1.4) circle in the center on a blue background"
    base = _image(builtin_model, prompt)
    assert np.abs(_image(builtin_model, prompt, CLIP_stop_at_last_layers=2) - base).mean() > 1
    assert np.abs(_image(builtin_model, prompt, emphasis="No norm") - base).mean() > 0
    params = GenerationParams(prompt=prompt, steps=2, width=128, height=128, CLIP_stop_at_last_layers=2)
    result = txt2img(builtin_model, params)
    assert "Clip skip: 2" in result.infotexts[0]
    assert params_from_infotext(result.infotexts[0])[0].CLIP_stop_at_last_layers == 2
    too_deep = params.model_copy(update={"CLIP_stop_at_last_layers": 12})
    with pytest.raises(ValueError, match="Clip skip 12 exceeds this model's 4 CLIP layers"):
        txt2img(builtin_model, too_deep)


class _SpyUNet(torch.nn.Module):
    """Wraps the UNet and records the conditional half of each call's text embeddings."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.conds = unet, []

    def forward(self, x, t, encoder_hidden_states=None, **kw):
        self.conds.append(encoder_hidden_states[encoder_hidden_states.shape[0] // 2 :][:1].clone())
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, **kw)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.unet, name)


def _texts_seen(model, prompt: str, sampler: str, steps: int) -> list[str]:
    """Which of the candidate texts the sampling loop conditioned on, call by call."""
    import dataclasses

    spy = _SpyUNet(model.unet)
    spied = dataclasses.replace(model, unet=spy)
    txt2img(
        spied, GenerationParams(prompt=prompt, steps=steps, sampler_name=sampler, seed=1, width=64, height=64)
    )
    encoder = ClipEncoder(model.tokenizer, model.text_encoder)
    candidates = {
        text: encode_conditioning(encoder, text, "", steps, CPU).at(0)[0][0].hidden
        for text in ("a red circle", "a blue star")
    }
    return [next(t for t, e in candidates.items() if torch.equal(c, e)) for c in spy.conds]


def test_the_sampling_loop_switches_prompts_at_the_scheduled_step(builtin_model) -> None:
    seen = _texts_seen(builtin_model, "[a red circle:a blue star:10]", "Euler", 20)
    assert seen == ["a red circle"] * 11 + ["a blue star"] * 9  # steps 0–10, then 11–19
    alternating = _texts_seen(builtin_model, "[a red circle|a blue star]", "Euler", 6)
    # A1111's schedule ends option k at step k + 1 and its 0-based sampler step uses the first
    # entry with step ≤ end, so steps 0 and 1 both take the first option; then it alternates.
    assert alternating == [
        "a red circle",
        "a red circle",
        "a blue star",
        "a red circle",
        "a blue star",
        "a red circle",
    ]
    # Heun evaluates twice per step; its second evaluation is at the next step's σ
    heun = _texts_seen(builtin_model, "[a red circle:a blue star:2]", "Heun", 4)
    assert heun == ["a red circle"] * 5 + ["a blue star"] * 2
