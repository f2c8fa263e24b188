"""peft LoRA injection on ComfyUI-shaped modules: targets, exact removal, comfy-form keys, round trips."""

import copy

import pytest
import torch
from tiny_host import CastingLinear, TinyVideoDiT
from torch import nn

from customvideox_core.adapter_file import AdapterMetadata, load_adapter, save_adapter
from customvideox_core.host_signature import HostSignature
from customvideox_core.lora_keys import to_comfy_lora
from customvideox_core.training import (
    LoraTrainConfig,
    inject_lora,
    load_lora_state_dict,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    remove_lora,
)

RANK = 3
ALPHA = 6.0


def tiny(family="cogvideox"):
    return TinyVideoDiT(family, channels=4, hidden_size=8, num_heads=2, num_layers=2, seed=0)


def inputs(dtype=torch.float32):
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 4, 3, 2, 2, generator=generator, dtype=dtype)
    return latents, torch.tensor([321.0])


def randomise_lora(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lora_parameters(model):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def config(family="cogvideox", **kwargs):
    return LoraTrainConfig.for_family(family, rank=RANK, alpha=ALPHA, **kwargs)


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("cogvideox", {f"blocks.{i}.{name}" for i in range(2) for name in ("q", "k", "v", "attn_out")}),
        ("wan", {f"blocks.{i}.self_attn.{name}" for i in range(2) for name in ("q", "k", "v", "o")}),
    ],
)
def test_injection_targets_exactly_the_self_attention_projections(family, expected):
    model = inject_lora(tiny(family), config(family))
    assert {name for name, _ in lora_layers(model)} == expected
    for _, layer in lora_layers(model):
        assert type(layer.get_base_layer()) is CastingLinear
        assert layer.r["default"] == RANK and layer.scaling["default"] == ALPHA / RANK
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {f"{name}.lora_{part}.default.weight" for name in expected for part in "AB"}


def test_fresh_lora_leaves_outputs_unchanged_and_uses_the_subclass_forward():
    model = tiny()
    latents, timestep = inputs(torch.float64)
    # CastingLinear casts its float32 weights to the float64 input; plain nn.Linear.forward would fail.
    before = model(latents, timestep)
    inject_lora(model, config(adapter_dtype="base"))
    after = model(latents.clone(), timestep)
    assert after.dtype == torch.float64
    assert torch.equal(before, after)


def test_wrapped_layer_matches_the_lora_formula():
    model = inject_lora(tiny(), config())
    randomise_lora(model)
    layer = dict(lora_layers(model))["blocks.1.attn_out"]
    base = layer.get_base_layer()
    x = torch.randn(5, 8, dtype=torch.float64)
    weight, bias = base.weight.double(), base.bias.double()
    down = layer.lora_A["default"].weight.double()
    up = layer.lora_B["default"].weight.double()
    expected = x @ weight.T + bias + (ALPHA / RANK) * (x @ down.T @ up.T)
    torch.testing.assert_close(layer(x.float()).double(), expected, rtol=1e-5, atol=1e-5)


def test_remove_lora_restores_the_original_modules_exactly():
    model = tiny()
    model.proj_in.weight.requires_grad_(False)  # a flag the host had set must survive
    latents, timestep = inputs()
    reference_output = model(latents, timestep)
    original_modules = dict(model.named_modules())
    original_state = {key: value.clone() for key, value in model.state_dict().items()}
    original_flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    original_attributes = set(vars(model))

    inject_lora(model, config())
    randomise_lora(model)
    assert not torch.equal(model(latents, timestep), reference_output)
    assert remove_lora(model) is model

    assert lora_layers(model) == []
    assert set(vars(model)) == original_attributes  # no peft_config, no snapshot left behind
    restored_modules = dict(model.named_modules())
    assert restored_modules.keys() == original_modules.keys()
    assert all(restored_modules[name] is module for name, module in original_modules.items())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == original_flags
    state = model.state_dict()
    assert state.keys() == original_state.keys()
    assert all(torch.equal(state[key], original_state[key]) for key in state)
    assert torch.equal(model(latents, timestep), reference_output)


def test_lora_state_dict_uses_comfy_keys_and_alpha():
    model = inject_lora(tiny(), config())
    randomise_lora(model)
    state = lora_state_dict(model)
    modules = [f"blocks.{i}.{name}" for i in range(2) for name in ("q", "k", "v", "attn_out")]
    expected = {
        f"diffusion_model.{m}.{suffix}" for m in modules for suffix in ("lora_A.weight", "lora_B.weight")
    }
    assert set(state) == expected | {f"diffusion_model.{m}.alpha" for m in modules}
    layer = dict(lora_layers(model))["blocks.0.q"]
    assert state["diffusion_model.blocks.0.q.lora_A.weight"].shape == (RANK, 8)
    assert state["diffusion_model.blocks.0.q.lora_B.weight"].shape == (8, RANK)
    assert torch.equal(state["diffusion_model.blocks.0.q.lora_A.weight"], layer.lora_A["default"].weight)
    assert state["diffusion_model.blocks.0.q.alpha"].item() == ALPHA
    # Keys already in comfy form: conversion keeps every one of them.
    converted = to_comfy_lora(state, "cogvideox")
    assert converted.unmatched == () and set(converted.state_dict) == set(state)


def test_lora_state_dict_of_a_wrapper_holding_diffusion_model_has_no_double_prefix():
    class BaseModelLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = tiny()

    wrapper = inject_lora(BaseModelLike(), config())
    assert "diffusion_model.blocks.0.q.lora_A.weight" in lora_state_dict(wrapper)


def merged_copy(base_model, state):
    """Oracle: ComfyUI's reading of the keys, W' = W + (alpha / rank) · B @ A, in a plain copy."""
    merged = copy.deepcopy(base_model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for key, down in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            path = key[len("diffusion_model.") : -len(".lora_A.weight")]
            up = state[f"diffusion_model.{path}.lora_B.weight"]
            alpha = state[f"diffusion_model.{path}.alpha"].item()
            modules[path].weight += (alpha / down.shape[0]) * (up.double() @ down.double()).float()
    return merged


def test_saved_adapter_reloads_to_the_same_outputs_and_matches_a_merged_oracle(tmp_path):
    trained = inject_lora(tiny(), config())
    randomise_lora(trained)
    latents, timestep = inputs()
    expected = trained(latents, timestep)
    metadata = AdapterMetadata(
        host=HostSignature("cogvideox", 8, 2, 2, 4, 1),
        rank=RANK,
        alpha=ALPHA,
        targets=config().targets,
        layout_version=1,
    )
    path = save_adapter(tmp_path / "adapter.safetensors", lora_state_dict(trained), metadata)

    state, loaded_metadata = load_adapter(path)
    assert loaded_metadata == metadata
    fresh = inject_lora(tiny(), config())
    load_lora_state_dict(fresh, state)
    assert torch.equal(fresh(latents, timestep), expected)

    merged = merged_copy(tiny(), state)
    torch.testing.assert_close(merged(latents, timestep), expected, rtol=1e-4, atol=1e-4)


def test_loaded_alpha_sets_the_scale():
    trained = inject_lora(tiny(), config())
    randomise_lora(trained)
    state = lora_state_dict(trained)
    state = {key: (value * 0 + 1.5 if key.endswith(".alpha") else value) for key, value in state.items()}
    fresh = inject_lora(tiny(), config())
    load_lora_state_dict(fresh, state)
    assert all(layer.scaling["default"] == 1.5 / RANK for _, layer in lora_layers(fresh))


def test_load_lora_state_dict_reports_missing_unexpected_and_misshapen_keys():
    trained = inject_lora(tiny(), config())
    state = lora_state_dict(trained)
    fresh = inject_lora(tiny(), config())

    missing = {k: v for k, v in state.items() if "blocks.1.v." not in k}
    with pytest.raises(ValueError, match="missing 2 keys"):
        load_lora_state_dict(fresh, missing)
    with pytest.raises(ValueError, match="match no LoRA layer"):
        load_lora_state_dict(
            fresh, state | {"diffusion_model.blocks.9.q.lora_A.weight": torch.zeros(RANK, 8)}
        )
    other_rank = lora_state_dict(inject_lora(tiny(), LoraTrainConfig(rank=5, alpha=5.0)))
    with pytest.raises(ValueError, match="expected"):
        load_lora_state_dict(fresh, other_rank)


def test_double_injection_and_foreign_targets_are_refused():
    model = inject_lora(tiny(), config())
    with pytest.raises(ValueError, match="remove_lora"):
        inject_lora(model, config())
    with pytest.raises(ValueError, match="self_attn.q"):
        inject_lora(tiny("cogvideox"), config("wan"))
    with pytest.raises(ValueError, match="inject_lora"):
        lora_state_dict(tiny())


@pytest.mark.parametrize(
    ("adapter_dtype", "expected"), [("float32", torch.float32), ("base", torch.bfloat16)]
)
def test_adapter_dtype_on_a_bf16_host(adapter_dtype, expected):
    model = tiny().to(torch.bfloat16)
    inject_lora(model, config(adapter_dtype=adapter_dtype))
    assert {parameter.dtype for parameter in lora_parameters(model)} == {expected}
    latents, timestep = inputs(torch.bfloat16)
    assert model(latents, timestep).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs", [{"rank": 0}, {"alpha": 0.0}, {"dropout": 1.0}, {"targets": ()}, {"adapter_dtype": "int8"}]
)
def test_invalid_lora_config_is_refused(kwargs):
    with pytest.raises(ValueError, match="LoraTrainConfig"):
        LoraTrainConfig(**kwargs)


def test_init_seed_makes_lora_init_reproducible_without_touching_the_global_rng():
    torch.manual_seed(11)
    expected_draw = torch.rand(3)
    torch.manual_seed(11)
    first = [p.detach().clone() for p in lora_parameters(inject_lora(tiny(), config(init_seed=4)))]
    assert torch.equal(torch.rand(3), expected_draw)
    second = [p.detach().clone() for p in lora_parameters(inject_lora(tiny(), config(init_seed=4)))]
    other = [p.detach().clone() for p in lora_parameters(inject_lora(tiny(), config(init_seed=5)))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])
