"""Unit tests of the host-free Stand-In core against naive oracles (no ComfyUI)."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from customvideox_core.erae import ERAEConfig, SubjectWords
from customvideox_core.standin.branch import ReferenceKV, reference_grid, timestep_zero_embedding
from customvideox_core.standin.cache import ReferenceKVCache, ReferenceKVKey
from customvideox_core.standin.lora_file import (
    StandInFileError,
    parse_standin_state_dict,
    read_standin_file,
)
from customvideox_core.standin.rope import (
    ReferencePlacement,
    apply_rope,
    axes_dims,
    reference_positions,
    rope_angles,
    video_positions,
)
from customvideox_core.standin.video_attention import plan_video_step, video_self_attention


def standin_state(blocks=2, dim=16, rank=4, prefix="", seed=0):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for block in range(blocks):
        for projection in "qkv":
            key = f"{prefix}blocks.{block}.self_attn.{projection}_loras"
            state[f"{key}.down.weight"] = torch.randn(rank, dim, generator=generator)
            state[f"{key}.up.weight"] = torch.randn(dim, rank, generator=generator)
    return state


# --- files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "pipe.dit.", "dit.", "diffusion_model.", "module."])
def test_parse_accepts_known_prefixes(prefix):
    lora = parse_standin_state_dict(standin_state(prefix=prefix))
    assert (lora.num_blocks, lora.rank, lora.dim) == (2, 4, 16)
    state = standin_state()
    assert torch.equal(lora.pair(1, "v").up, state["blocks.1.self_attn.v_loras.up.weight"])


def test_parse_accepts_a_state_dict_entry():
    assert parse_standin_state_dict({"state_dict": standin_state()}).num_blocks == 2


def test_lora_delta_is_up_of_down():
    lora = parse_standin_state_dict(standin_state())
    hidden = torch.randn(3, 16, dtype=torch.float64)
    pair = lora.pair(0, "k")
    expected = 0.5 * (hidden @ pair.down.double().T @ pair.up.double().T)
    assert torch.allclose(pair.delta(hidden, 0.5), expected)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(1)}), "not a Stand-In LoRA"),
        (lambda s: s.pop("blocks.1.self_attn.k_loras.up.weight"), "incomplete"),
        (lambda s: s.update({"blocks.1.self_attn.q_loras.down.weight": torch.zeros(5, 16)}), "expected"),
        (lambda s: s.update({"blocks.0.self_attn.q_loras.up.weight": "text"}), "plain tensors"),
        (lambda s: s.clear(), "no tensors"),
    ],
)
def test_parse_refuses_bad_content(mutate, message):
    state = standin_state()
    mutate(state)
    with pytest.raises(StandInFileError, match=message):
        parse_standin_state_dict(state)


def test_check_model_refuses_another_model():
    lora = parse_standin_state_dict(standin_state())
    lora.check_model(num_blocks=2, dim=16)
    with pytest.raises(StandInFileError, match="2 blocks of width 16.*40 blocks of width 5120"):
        lora.check_model(num_blocks=40, dim=5120)


class NotATensor:
    pass


def test_read_file_formats_and_refusals(tmp_path):
    import safetensors.torch

    safetensors.torch.save_file(standin_state(), str(tmp_path / "a.safetensors"))
    torch.save({"state_dict": standin_state(prefix="pipe.dit.")}, tmp_path / "b.ckpt")
    assert read_standin_file(str(tmp_path / "a.safetensors")).num_blocks == 2
    assert read_standin_file(str(tmp_path / "b.ckpt")).num_blocks == 2
    # a pickle that needs a class to be rebuilt is never executed
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.ckpt", "wb") as handle:
        pickle.dump({"blocks.0.self_attn.q_loras.down.weight": NotATensor()}, handle)
    with pytest.raises(StandInFileError, match="plain tensors"):
        read_standin_file(str(tmp_path / "evil.ckpt"))
    assert not marker.exists()
    (tmp_path / "c.gguf").write_bytes(b"x")
    with pytest.raises(StandInFileError, match="unsupported file type"):
        read_standin_file(str(tmp_path / "c.gguf"))
    torch.save([torch.zeros(1)], tmp_path / "d.pt")
    with pytest.raises(StandInFileError, match="mapping"):
        read_standin_file(str(tmp_path / "d.pt"))


# --- RoPE ----------------------------------------------------------------------------------------------


def published_tables(head_dim: int, end: int = 64):
    """Stand-In's tables: complex rotations for positions -1 .. end-1 per axis (index 0 = position -1)."""
    tables = []
    for dims in axes_dims(head_dim):
        freqs = 1.0 / (10000 ** (torch.arange(0, dims, 2, dtype=torch.float64)[: dims // 2] / dims))
        positions = torch.arange(-1, end, dtype=torch.float64)
        tables.append(
            torch.polar(
                torch.ones(len(positions), dims // 2, dtype=torch.float64), torch.outer(positions, freqs)
            )
        )
    return tables


def test_reference_positions_match_the_published_indexing():
    """Video reads index offset=1.. ; the reference reads time index 0, rows h+1.., columns w+1.."""
    head_dim, (f, h, w), (hr, wr) = 12, (3, 4, 5), (2, 3)
    t_table, h_table, w_table = published_tables(head_dim)
    offset = 1
    ref = torch.cat(
        [
            t_table[0].view(1, 1, 1, -1).expand(1, hr, wr, -1),
            h_table[h + offset : h + offset + hr].view(1, hr, 1, -1).expand(1, hr, wr, -1),
            w_table[w + offset : w + offset + wr].view(1, 1, wr, -1).expand(1, hr, wr, -1),
        ],
        dim=-1,
    ).reshape(hr * wr, -1)
    video = torch.cat(
        [
            t_table[offset : f + offset].view(f, 1, 1, -1).expand(f, h, w, -1),
            h_table[offset : h + offset].view(1, h, 1, -1).expand(f, h, w, -1),
            w_table[offset : w + offset].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, -1)
    ours_ref = torch.polar(
        torch.ones(hr * wr, head_dim // 2, dtype=torch.float64),
        rope_angles(reference_positions((f, h, w), (hr, wr)), head_dim),
    )
    ours_video = torch.polar(
        torch.ones(f * h * w, head_dim // 2, dtype=torch.float64),
        rope_angles(video_positions((f, h, w)), head_dim),
    )
    assert torch.allclose(ours_ref, ref, atol=1e-12)
    assert torch.allclose(ours_video, video, atol=1e-12)
    shifted = reference_positions((f, h, w), (hr, wr), ReferencePlacement(extra_offset=1))
    assert torch.equal(shifted[:, 1:], reference_positions((f, h, w), (hr, wr))[:, 1:] + 1)


def test_apply_rope_is_the_complex_rotation():
    tokens = torch.randn(2, 5, 3, 12, dtype=torch.float64)
    angles = torch.rand(5, 6, dtype=torch.float64) * 10
    complex_tokens = torch.view_as_complex(tokens.reshape(2, 5, 3, 6, 2))
    expected = torch.view_as_real(
        complex_tokens * torch.polar(torch.ones_like(angles), angles)[None, :, None]
    ).reshape(2, 5, 3, 12)
    assert torch.allclose(apply_rope(tokens, angles), expected, atol=1e-12)
    assert apply_rope(tokens.float(), angles).dtype == torch.float32


def test_axes_dims_of_wan_heads():
    assert axes_dims(128) == (44, 42, 42)
    assert axes_dims(64) == (24, 20, 20)


# --- video attention -----------------------------------------------------------------------------------


def dense_attention(q, k, v, bias=None):
    """float64 softmax(q k^T / sqrt(d) + bias) v on [B, H, L, D]."""
    logits = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    return logits.softmax(-1) @ v.double()


def split(t, heads):
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge(t):
    return t.transpose(1, 2).flatten(-2)


def sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    heads, d, lv, lr, batch = 2, 8, 12, 5, 2
    q, k, v = (torch.randn(batch, lv, heads * d, generator=g, dtype=torch.float64) for _ in range(3))
    rk, rv = (torch.randn(1, lr, heads * d, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, rk, rv, heads


def step(batch=2, cond=(True, False), uncond_sees=True, tab=0.0, weights=None, erae=None, lr=5):
    w = torch.ones(lr) if weights is None else weights
    return plan_video_step(
        row_is_cond=cond[:batch],
        row_sees_reference=tuple(flag or uncond_sees for flag in cond[:batch]),
        tab_value=tab,
        reference_weights=w,
        erae=erae,
    )


def test_video_queries_see_video_then_reference_keys(tokens):
    q, k, v, rk, rv, heads = tokens
    out = video_self_attention(q, k, v, rk, rv, heads, step(), attention_fn=sdpa)
    keys = torch.cat([k, rk.expand(2, -1, -1)], 1)
    values = torch.cat([v, rv.expand(2, -1, -1)], 1)
    expected = merge(dense_attention(split(q, heads), split(keys, heads), split(values, heads)))
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)


def test_blind_rows_are_the_plain_attention(tokens):
    q, k, v, rk, rv, heads = tokens
    out = video_self_attention(q, k, v, rk, rv, heads, step(uncond_sees=False, tab=2.0), attention_fn=sdpa)
    plain = merge(dense_attention(split(q, heads), split(k, heads), split(v, heads)))
    assert torch.allclose(out[1], plain[1], rtol=0, atol=1e-12)
    assert not torch.allclose(out[0], plain[0], atol=1e-3)


def test_tab_and_erae_bias_only_video_to_reference_logits(tokens):
    q, k, v, rk, rv, heads = tokens
    weights = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.25])
    activation = torch.rand(2, 12, dtype=torch.float64)
    erae = ERAEConfig(entity_positions=(0,), gamma=1.5)
    planned = step(tab=2.0, weights=weights, erae=erae)
    out = video_self_attention(q, k, v, rk, rv, heads, planned, attention_fn=sdpa, activation=activation)
    keys = torch.cat([k, rk.expand(2, -1, -1)], 1)
    values = torch.cat([v, rv.expand(2, -1, -1)], 1)
    erae_rows = torch.tensor([1.0, 0.0], dtype=torch.float64)  # row 1 is unconditional: no ERAE
    video_factor = 2.0 * (1 + 1.5 * activation * erae_rows[:, None])  # [B, Lv]
    bias = torch.zeros(2, 1, 12, 17, dtype=torch.float64)
    bias[:, 0, :, 12:] = video_factor[:, :, None] * weights.double()
    expected = merge(dense_attention(split(q, heads), split(keys, heads), split(values, heads), bias))
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)


def test_blocking_drops_reference_keys_outside_the_mask(tokens):
    q, k, v, rk, rv, heads = tokens
    weights = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    erae = ERAEConfig(entity_positions=(0,), gamma=0.0, block_outside_mask=True)
    out = video_self_attention(q, k, v, rk, rv, heads, step(weights=weights, erae=erae), attention_fn=sdpa)
    kept = [0, 2, 4]
    keys = torch.cat([k, rk[:, kept].expand(2, -1, -1)], 1)
    values = torch.cat([v, rv[:, kept].expand(2, -1, -1)], 1)
    expected = merge(dense_attention(split(q, heads), split(keys, heads), split(values, heads)))
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="mask is empty"):
        step(weights=torch.zeros(5), erae=erae)


# --- branch helpers and cache --------------------------------------------------------------------------


def test_timestep_zero_embedding_is_wans_sinusoid_at_zero():
    half = 8
    sinusoid = torch.outer(
        torch.zeros(1, dtype=torch.float64),
        torch.pow(10000, -torch.arange(half, dtype=torch.float64).div(half)),
    )
    expected = torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)
    assert torch.equal(timestep_zero_embedding(16).double(), expected)


def test_reference_grid_checks_the_latent():
    assert reference_grid(torch.zeros(1, 16, 1, 64, 64), (1, 2, 2)) == (32, 32)
    with pytest.raises(ValueError, match="one reference image"):
        reference_grid(torch.zeros(1, 16, 2, 8, 8), (1, 2, 2))
    with pytest.raises(ValueError, match="multiple of 16 pixels"):
        reference_grid(torch.zeros(1, 16, 1, 9, 8), (1, 2, 2))


def test_cache_computes_once_per_key():
    cache = ReferenceKVCache()
    made = []

    def compute():
        made.append(1)
        return ReferenceKV(keys=(torch.zeros(1),), values=(torch.zeros(1),), grid=(1, 1))

    key = ReferenceKVKey(model=1, video_grid=(1, 2, 3), device="cpu", dtype="float32")
    first = cache.get(key, compute)
    assert cache.get(key, compute) is first
    cache.get(ReferenceKVKey(model=2, video_grid=(1, 2, 3), device="cpu", dtype="float32"), compute)
    assert (len(made), cache.computed, cache.reused, len(cache)) == (2, 2, 1, 2)
    cache.clear()
    cache.get(key, compute)
    assert len(made) == 3


def test_erae_with_bound_subjects_reads_the_words_of_image_one():
    """Stand-In has one reference image: ERAE reads the words bound to image 1, or else the unbound words;
    a config with subjects only (no unbound words) plans without error."""
    bound = ERAEConfig(entity_positions=(2,), gamma=1.5, subjects=(SubjectWords(0, (5, 6)),))
    unbound_only = ERAEConfig(entity_positions=(2,), gamma=1.5)
    subjects_only = ERAEConfig(gamma=1.5, subjects=(SubjectWords(0, (5,)),))
    planned = {
        name: step(erae=config)
        for name, config in (("bound", bound), ("unbound", unbound_only), ("subjects", subjects_only))
    }
    assert (planned["bound"].entity_positions, planned["bound"].gamma) == ((5, 6), 1.5)
    assert (planned["unbound"].entity_positions, planned["unbound"].gamma) == ((2,), 1.5)
    assert (planned["subjects"].entity_positions, planned["subjects"].gamma) == ((5,), 1.5)
    no_words = step(erae=ERAEConfig(gamma=1.5))
    assert (no_words.entity_positions, no_words.gamma) == ((), 0.0)
