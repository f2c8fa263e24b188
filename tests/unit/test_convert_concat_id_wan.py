"""Concat-ID-Wan checkpoints: splitting off the reference AdaLN, and its modulation rows against
``inference_wan.py``'s ``forward_adaln`` written out chunk by chunk."""

from __future__ import annotations

import pytest
import torch

from customvideox_core.convert.concat_id_wan import (
    ReferenceAdaLN,
    reference_modulation,
    reference_projection,
    split_concat_id_wan,
)
from customvideox_core.convert.sat_cogvideox import ConversionError

DIM, BLOCKS = 8, 2


def wan_state(adaln: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {"patch_embedding.weight": torch.randn(DIM, 4, 1, 2, 2, generator=generator)}
    state["time_projection.1.weight"] = torch.randn(6 * DIM, DIM, generator=generator)
    for index in range(BLOCKS):
        state[f"blocks.{index}.modulation"] = torch.randn(1, 6, DIM, generator=generator)
        state[f"blocks.{index}.self_attn.q.weight"] = torch.randn(DIM, DIM, generator=generator)
        if adaln:
            state[f"blocks.{index}.modulation_ref"] = torch.randn(1, 6, DIM, generator=generator)
    if adaln:
        state["time_projection_ref.1.weight"] = torch.randn(6 * DIM, DIM, generator=generator)
        state["time_projection_ref.1.bias"] = torch.randn(6 * DIM, generator=generator)
    return state


def test_first_stage_is_plain_wan():
    state = wan_state(adaln=False)
    weights = split_concat_id_wan(state)
    assert weights.reference_adaln is None
    assert weights.wan.keys() == state.keys()


def test_adaln_release_is_split_off():
    state = wan_state(adaln=True)
    weights = split_concat_id_wan(state)
    assert not any("_ref" in key for key in weights.wan)
    adaln = weights.reference_adaln
    assert torch.equal(adaln.modulation[1], state["blocks.1.modulation_ref"])
    assert torch.equal(adaln.projection_bias, state["time_projection_ref.1.bias"])


def test_partial_adaln_and_non_wan_are_refused():
    state = wan_state(adaln=True)
    del state["time_projection_ref.1.bias"]
    with pytest.raises(ConversionError, match="time_projection_ref.1.bias"):
        split_concat_id_wan(state)
    with pytest.raises(ConversionError, match="not a Wan 2.1 checkpoint"):
        split_concat_id_wan({"x.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match="expected"):
        ReferenceAdaLN(torch.zeros(6 * DIM, DIM), torch.zeros(6 * DIM), (torch.zeros(1, 5, DIM),))


def test_reference_modulation_follows_forward_adaln():
    state = wan_state(adaln=True)
    adaln = split_concat_id_wan(state).reference_adaln
    embedding = torch.randn(3, DIM, generator=torch.Generator().manual_seed(1))
    projected = reference_projection(adaln, embedding)
    # forward_adaln: t_mod_ref = time_projection_ref(t) = Linear(SiLU(t)), unflatten to (6, dim)
    silu = embedding * torch.sigmoid(embedding)
    expected_projection = silu @ state["time_projection_ref.1.weight"].T + state["time_projection_ref.1.bias"]
    assert torch.allclose(projected, expected_projection.unflatten(1, (6, DIM)), atol=1e-6)
    rows = reference_modulation(adaln.modulation[0], projected)
    shift_msa, scale_msa, gate_msa, _shift_mlp, _scale_mlp, gate_mlp = (
        state["blocks.0.modulation_ref"] + projected
    ).chunk(6, dim=1)
    # attention: (shift_msa, scale_msa, gate_msa); feed-forward: modulate(.., shift_msa, scale_msa), gate_mlp
    expected = torch.cat([shift_msa, scale_msa, gate_msa, shift_msa, scale_msa, gate_mlp], dim=1)
    assert torch.equal(rows, expected)


def test_command_line_resaves_a_concat_id_wan_pt_as_safetensors(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from customvideox_core.convert.cli import main

    state = wan_state(adaln=True)
    source = tmp_path / "second_stage_adaln.pt"
    torch.save(state, source)
    output = tmp_path / "concat_id_wan_adaln.safetensors"
    assert main(["--input", str(source), "--output", str(output), "--variant", "wan"]) == 0
    written = load_file(str(output))
    assert written.keys() == state.keys()
    assert all(torch.equal(written[key], state[key]) for key in state)
    with safe_open(str(output), framework="pt") as reader:
        assert reader.metadata()["cvx_reference_adaln"] == "yes"
    del state["blocks.0.modulation_ref"]
    torch.save(state, source)
    broken = tmp_path / "broken.safetensors"
    assert main(["--input", str(source), "--output", str(broken), "--variant", "wan"]) == 2
    assert not broken.exists()
