"""The cached reference layout, host-free: the layout table, adapter metadata, the trainable
reference-only LoRA and its Stand-In file form, the loop training an adapter outside the model, and
checkpointed modules seeing the options their forward saw."""

import math

import pytest
import torch
from host_signatures import COGVIDEOX_5B, WAN_1_3B
from torch import nn

from customvideox_core import LAYOUT_VERSION
from customvideox_core.adapter_file import (
    AdapterMetadata,
    AdapterMismatchError,
    check_adapter_host,
    load_adapter,
    save_adapter,
)
from customvideox_core.host_specs import spec_for
from customvideox_core.reference_layouts import LAYOUT_NAMES, REFERENCE_LAYOUTS, reference_layout
from customvideox_core.standin.lora_file import parse_standin_state_dict
from customvideox_core.training import (
    LatentCacheEntry,
    ReferenceBranchLoRA,
    TrainConfig,
    checkpoint_modules,
    train,
)


def metadata(host=WAN_1_3B, **kwargs):
    targets = ReferenceBranchLoRA.TARGETS
    return AdapterMetadata(
        host=host, rank=4, alpha=8.0, targets=targets, layout_version=LAYOUT_VERSION, **kwargs
    )


def test_layout_table_names_and_lookup():
    assert LAYOUT_NAMES == ("joint", "cached") and set(REFERENCE_LAYOUTS) == set(LAYOUT_NAMES)
    assert reference_layout("cached").name == "cached"
    with pytest.raises(ValueError, match="unknown reference layout 'sideways'.*joint, cached"):
        reference_layout("sideways")


def test_host_specs_say_where_the_cached_layout_runs():
    assert spec_for("wan").reference_layouts == ("joint", "cached")
    assert spec_for("cogvideox").reference_layouts == ("joint",)
    spec_for("wan").check_layout("cached", "Wan 2.1/2.2 1.3B")
    with pytest.raises(ValueError, match="'cached' reference layout is not available on CogVideoX"):
        spec_for("cogvideox").check_layout("cached", "CogVideoX-5B")


def test_metadata_records_the_layout_and_old_files_are_joint(tmp_path):
    tensors = {"blocks.0.self_attn.q_loras.down.weight": torch.zeros(4, 8)}
    path = save_adapter(tmp_path / "cached.safetensors", tensors, metadata(reference_layout="cached"))
    _, loaded = load_adapter(path)
    assert loaded.reference_layout == "cached"
    header = metadata().to_header()
    assert header["reference_layout"] == "joint"
    del header["reference_layout"]  # a file written before the key existed
    assert AdapterMetadata.from_header(header).reference_layout == "joint"
    header["reference_layout"] = "sideways"
    with pytest.raises(ValueError, match="unknown reference layout 'sideways'"):
        AdapterMetadata.from_header(header)
    with pytest.raises(ValueError, match="unknown reference layout"):
        metadata(reference_layout="sideways")


def test_a_cached_adapter_is_refused_on_a_host_without_the_branch():
    check_adapter_host(metadata(reference_layout="cached"), WAN_1_3B)
    with pytest.raises(
        AdapterMismatchError,
        match="cannot run here: the 'cached' reference layout is not available on CogVideoX-5B",
    ):
        check_adapter_host(metadata(host=COGVIDEOX_5B, reference_layout="cached"), COGVIDEOX_5B)


def test_a_fresh_reference_lora_changes_nothing_and_is_seeded():
    lora = ReferenceBranchLoRA(num_blocks=2, dim=8, rank=4, alpha=8.0, init_seed=3)
    x = torch.randn(1, 5, 8)
    for pair in lora.as_standin_lora().pairs.values():
        assert torch.equal(pair.delta(x), torch.zeros(1, 5, 8))
    again = ReferenceBranchLoRA(num_blocks=2, dim=8, rank=4, alpha=8.0, init_seed=3)
    other = ReferenceBranchLoRA(num_blocks=2, dim=8, rank=4, alpha=8.0, init_seed=4)
    assert torch.equal(lora.down["1_v"], again.down["1_v"])
    assert not torch.equal(lora.down["1_v"], other.down["1_v"])
    bound = 1.0 / math.sqrt(8)  # Kaiming uniform with a = sqrt(5), fan_in 8 (peft's lora_A)
    assert 0.5 * bound < float(lora.down["0_q"].detach().abs().max()) <= bound


def test_the_delta_is_alpha_over_rank_up_down_in_float64():
    lora = ReferenceBranchLoRA(num_blocks=1, dim=6, rank=2, alpha=5.0, init_seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        lora.up["0_k"].copy_(torch.randn(6, 2, generator=generator))
    x = torch.randn(3, 6, dtype=torch.float64, generator=generator)
    expected = (5.0 / 2) * x @ lora.down["0_k"].double().T @ lora.up["0_k"].double().T
    got = lora.as_standin_lora().pair(0, "k").delta(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)  # up·scale is formed in float32


def test_the_file_form_is_stand_in_with_the_scale_folded_and_round_trips():
    lora = ReferenceBranchLoRA(num_blocks=2, dim=8, rank=4, alpha=2.0, init_seed=0)
    with torch.no_grad():
        for up in lora.up.values():
            up.normal_()
    state = lora.adapter_state_dict()
    assert len(state) == 2 * 3 * 2 and all(key.startswith("blocks.") for key in state)
    parsed = parse_standin_state_dict(state, source="test")
    x = torch.randn(2, 8)
    for key, pair in lora.as_standin_lora().pairs.items():
        torch.testing.assert_close(parsed.pair(*key).delta(x), pair.delta(x))
    restored = ReferenceBranchLoRA(num_blocks=2, dim=8, rank=4, alpha=2.0, init_seed=9)
    restored.load_standin(parsed)
    for name, parameter in lora.named_parameters():
        torch.testing.assert_close(dict(restored.named_parameters())[name], parameter)
    with pytest.raises(ValueError, match="this adapter has 2 blocks of width 8 at rank 2"):
        ReferenceBranchLoRA(num_blocks=2, dim=8, rank=2, alpha=2.0).load_standin(parsed)


class _ReferenceModel(nn.Module):
    """A frozen linear model whose reference enters through a reference-only LoRA pair."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(8, 8)
        self.mix.requires_grad_(False)


def test_the_loop_trains_an_adapter_that_lives_outside_the_model():
    model = _ReferenceModel()
    adapter = ReferenceBranchLoRA(num_blocks=1, dim=8, rank=2, alpha=2.0, init_seed=0)

    def model_fn(video, reference, timestep):
        del timestep
        tokens = reference.flatten(2).transpose(1, 2)  # [B, L, C]
        delta = adapter.as_standin_lora().pair(0, "v").delta(tokens)
        return video + (model.mix(tokens) + delta).transpose(1, 2).reshape(video.shape)

    generator = torch.Generator().manual_seed(0)
    items = [
        LatentCacheEntry(
            torch.randn(1, 8, 1, 2, 2, generator=generator), torch.randn(1, 8, 1, 2, 2, generator=generator)
        )
        for _ in range(2)
    ]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    saved = []
    losses = train(
        model,
        items,
        TrainConfig(steps=30, objective="flow_matching", learning_rate=1e-2, save_every=30),
        model_fn=model_fn,
        adapter=adapter,
        on_save=lambda step, state: saved.append(state),
    )
    assert len(losses) == 30
    assert float(adapter.up["0_v"].detach().abs().max()) > 0, "the adapter's up weights must have moved"
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert sorted(saved[0]) == sorted(adapter.adapter_state_dict())


class _ReadsOptions(nn.Module):
    """A block that scales its input by ``options["scale"]``, as a host block reads its options."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x, options):
        return torch.tanh(self.linear(x) * options["scale"])  # tanh saves its output: recomputed in backward


def test_checkpointed_blocks_recompute_with_the_options_their_forward_saw():
    blocks = [_ReadsOptions(), _ReadsOptions()]
    x = torch.randn(3, 4)

    def run():
        options = {}
        out = x
        for index, block in enumerate(blocks):
            options["scale"] = float(index + 2)  # mutated between blocks, as ComfyUI's block_index is
            out = block(out, options)
        out.square().sum().backward()
        grads = [p.grad.clone() for block in blocks for p in block.parameters()]
        for block in blocks:
            block.zero_grad(set_to_none=True)
        return grads

    plain = run()
    restore = checkpoint_modules(blocks)
    try:
        checkpointed = run()
    finally:
        restore()
    for got, expected in zip(checkpointed, plain, strict=True):
        torch.testing.assert_close(got, expected)
