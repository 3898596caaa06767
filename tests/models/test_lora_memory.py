"""Where a LoRA job keeps the weights it patches: the originals wait in CPU RAM (never beside the
weights on the GPU), the update is made on the weight's own device and dtype, and every weight
comes back bit for bit after the block, an error inside it included.

There is no GPU here, so the GPU case runs the real code on fake tensors: torch's FakeTensorMode
gives tensors a device ("cuda") and a dtype without any memory, and refuses an op that mixes
devices, as CUDA does."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from engine.models import lora as lora_patch
from engine.models.families import family
from engine.models.lora import LoraFile, LoraModule, LoraRequest, WeightBackups, applied
from tests.fakes.tiny_models import tiny_components

RANK = 2
TARGETS = (  # a Linear and a LoCon 3×3 convolution in the UNet, a Linear in the text encoder
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
)
BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def as_model(parts) -> SimpleNamespace:
    """What `applied` reads of a loaded model: its UNet, text encoder and family."""
    return SimpleNamespace(unet=parts.unet, text_encoder=parts.text_encoder, spec=family("sd1"))


def factors(module: torch.nn.Module, seed: int) -> LoraModule:
    """A kohya module (CPU factors, as a loaded file has them) shaped for `module`."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(module, torch.nn.Linear):
        down_shape, up_shape = (RANK, module.in_features), (module.out_features, RANK)
    else:
        down_shape, up_shape = (
            (RANK, module.in_channels, *module.kernel_size),
            (module.out_channels, RANK, 1, 1),
        )
    return LoraModule(torch.randn(down_shape, generator=g), torch.randn(up_shape, generator=g), alpha=1.0)


def lora_for(model, seed: int, keys: tuple[str, ...] = TARGETS) -> LoraFile:
    targets = lora_patch._targets(model)
    modules = {key: factors(targets[key], seed + i) for i, key in enumerate(keys)}
    return LoraFile(f"lora{seed}", Path(f"lora{seed}.safetensors"), modules)


@pytest.fixture
def recorded(monkeypatch) -> list[WeightBackups]:
    """Every WeightBackups that `applied` makes, to look at what it saved."""
    made: list[WeightBackups] = []

    class Recorded(WeightBackups):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(lora_patch, "WeightBackups", Recorded)
    return made


@pytest.fixture(scope="module")
def parts():
    return tiny_components(seed=0)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bits, so that -0.0 and 0.0 (or two NaNs) count as what they are."""
    return tensor.detach().view(BITS[tensor.dtype]).clone()


def raw_state(model) -> dict[str, torch.Tensor]:
    unet = {f"unet.{k}": bits(v) for k, v in model.unet.state_dict().items()}
    return {**unet, **{f"te.{k}": bits(v) for k, v in model.text_encoder.state_dict().items()}}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_backups_of_gpu_weights_wait_in_cpu_ram(recorded) -> None:
    fake = FakeTensorMode(allow_non_fake_inputs=True)  # real CPU tensors (the LoRA's) may enter it
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # built in half precision, as a GPU model is loaded
    try:
        with fake, torch.device("cuda"):
            model = as_model(tiny_components(seed=0))
    finally:
        torch.set_default_dtype(previous)
    lora = lora_for(model, seed=1)  # outside the fake mode: a file's factors are real, on the CPU
    targets = lora_patch._targets(model)
    with fake:
        weight = targets[TARGETS[0]].weight
        assert weight.device.type == "cuda" and weight.dtype == torch.float16
        with pytest.raises(RuntimeError, match="same device"):  # the premise: devices are checked
            weight + torch.ones(weight.shape)
        # A CPU-made update added to a cuda weight would raise here, like the check above.
        with applied(model, [(lora, LoraRequest(lora.name))]):
            (backups,) = recorded
            assert set(backups.saved) == {targets[key] for key in TARGETS}
            for module, original in backups.saved.items():
                assert original.device.type == "cpu"
                assert original.dtype == module.weight.dtype == torch.float16
                assert module.weight.device.type == "cuda"
    assert all(targets[key].weight.device.type == "cuda" for key in TARGETS)


def test_the_update_is_made_on_the_device_asked_for() -> None:
    module = LoraModule(torch.randn(RANK, 8), torch.randn(8, RANK), alpha=1.0)
    assert module.delta(torch.Size((8, 8)), torch.device("meta")).device.type == "meta"
    local = module.delta(torch.Size((8, 8)))
    assert local.device.type == "cpu" and local.dtype == torch.float32
    assert torch.allclose(local, (module.up @ module.down) / RANK)


def patched_keys(model, keys: tuple[str, ...]) -> set[str]:
    """The `raw_state` names of the weights that the kohya `keys` patch."""
    targets = lora_patch._targets(model)
    wanted = {id(targets[key]) for key in keys}
    return {
        f"{label}.{name}.weight"
        for label, part in (("unet", model.unet), ("te", model.text_encoder))
        for name, module in part.named_modules()
        if id(module) in wanted
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_weight_comes_back_bit_for_bit(parts, recorded, dtype) -> None:
    model = as_model(copy.deepcopy(parts))
    model.unet.to(dtype)
    model.text_encoder.to(dtype)
    before = raw_state(model)
    first = lora_for(model, seed=1)
    second = lora_for(model, seed=10, keys=TARGETS[:1])  # the same layer again
    with applied(model, [(first, LoraRequest("a")), (second, LoraRequest("b", unet=0.5))]):
        (backups,) = recorded
        assert len(backups.saved) == len(TARGETS)  # each layer saved once, before the first LoRA
        for module, original in backups.saved.items():
            assert original.device.type == "cpu" and original.dtype == dtype
            # a copy of its own, not a view of the weight being patched
            assert original.untyped_storage().data_ptr() != module.weight.untyped_storage().data_ptr()
        now = raw_state(model)
        assert {k for k in before if not torch.equal(before[k], now[k])} == patched_keys(model, TARGETS)
        saved = {id(module): bits(original) for module, original in backups.saved.items()}
    assert same(raw_state(model), before)
    for module in backups.saved:  # the saved copies were the originals, not the first LoRA's result
        assert torch.equal(saved[id(module)], bits(module.weight))


def test_an_error_inside_the_block_restores_every_weight(parts, recorded) -> None:
    model = as_model(copy.deepcopy(parts))
    model.unet.half()
    model.text_encoder.half()
    before = raw_state(model)
    lora = lora_for(model, seed=3)
    with pytest.raises(RuntimeError, match="interrupted"), applied(model, [(lora, LoraRequest(lora.name))]):
        assert not same(raw_state(model), before)
        raise RuntimeError("interrupted")
    assert len(recorded[0].saved) == len(TARGETS)
    assert same(raw_state(model), before)


def test_a_lora_that_fits_nothing_restores_what_an_earlier_one_patched(parts, recorded) -> None:
    model = as_model(copy.deepcopy(parts))
    before = raw_state(model)
    good = lora_for(model, seed=4)
    stray = LoraFile(
        "stray", Path("stray.safetensors"), {"lora_unet_nowhere": factors(torch.nn.Linear(4, 4), 5)}
    )
    with (
        pytest.raises(ValueError, match="does not fit"),
        applied(model, [(good, LoraRequest("a")), (stray, LoraRequest("b"))]),
    ):
        pass
    assert len(recorded[0].saved) == len(TARGETS)  # the first LoRA was merged before the error
    assert same(raw_state(model), before)
