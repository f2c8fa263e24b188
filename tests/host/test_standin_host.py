"""Stand-In inside a real ComfyUI, judged against an independent float64 Stand-In (``standin_oracle``).

Tiny random-weight Wan 2.1 T2V (2 blocks, dim 128, 2 heads, attention weights std 0.3) built with
ComfyUI's own classes; sampling runs through ComfyUI's own sampler. The oracle replaces every DiT block
(ComfyUI's ``patches_replace`` on an unpatched clone) with the published block math in float64, carrying
the reference tokens from block to block and recomputing them at every call — the uncached method.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from nodes_support import (
    LATENT_SHAPE,
    STANDIN_MODULES,
    left_untouched,
    load_model,
    load_vae,
    pack_modules,
    sample,
)
from standin_oracle import RANK, lora_state, oracle_model

REFERENCE_SIZE = 64  # pixels: an 8x8 latent, a 4x4 token grid (the video is 8x12 latents, 4x6 tokens)
ORACLE_ATOL = 2e-4  # float32 host vs float64 oracle after two sampling steps of ~unit latents


@pytest.fixture(scope="module")
def mods(pack_module) -> dict:
    return vars(pack_modules(pack_module, STANDIN_MODULES))


@pytest.fixture(scope="module")
def model(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.wan)


@pytest.fixture(scope="module")
def reference(comfy_host, tiny_models):
    vae = load_vae(tiny_models.vae_dir, tiny_models.vae)
    generator = torch.Generator().manual_seed(11)
    image = torch.rand(1, REFERENCE_SIZE, REFERENCE_SIZE, 3, generator=generator)
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return node.execute(vae, image, REFERENCE_SIZE, REFERENCE_SIZE, "pad", False, None).args[0]


@pytest.fixture(scope="module")
def lora(mods):
    return mods["lora"].parse_standin_state_dict(lora_state(), source="test")


def apply(mods, model, lora, reference, *, strength=1.0, tab=None, erae=None, uncond_sees_reference=True):
    return mods["standin_nodes"].apply_standin(
        model,
        lora,
        reference,
        strength=strength,
        tab=tab,
        erae=erae,
        uncond_sees_reference=uncond_sees_reference,
    )


def test_patched_sampling_equals_the_float64_standin_oracle(mods, model, reference, lora):
    """Ours (cached K/V, ComfyUI's forward + our override) == published Stand-In recomputed every call."""
    ours = sample(apply(mods, model, lora, reference))
    oracle = sample(oracle_model(model, reference, lora_state(), 1.0))
    plain = sample(model)
    effect = (oracle - plain).abs().max().item()
    assert effect > 50 * ORACLE_ATOL, (
        f"the reference barely moves the output ({effect:.3g}): the test is blind"
    )
    diff = (ours - oracle).abs().max().item()
    assert diff < ORACLE_ATOL, f"max diff {diff:.3g} (reference effect {effect:.3g})"


def test_oracle_check_can_fail_wrong_offset(mods, model, reference, lora, monkeypatch):
    """Sanity of the oracle test: shifting the reference rows/columns by one (kijai's freq_offset) is caught."""
    rope = mods["branch"]
    shifted = rope.ReferencePlacement(extra_offset=1)
    monkeypatch.setattr(rope, "STANDIN_PLACEMENT", shifted)
    original = rope.compute_reference_kv

    def with_offset(*args, **kwargs):
        kwargs["placement"] = shifted
        return original(*args, **kwargs)

    patch_module = mods["standin_patch"]
    monkeypatch.setattr(patch_module, "compute_reference_kv", with_offset)
    ours = sample(apply(mods, model, lora, reference))
    oracle = sample(oracle_model(model, reference, lora_state(), 1.0))
    assert (ours - oracle).abs().max().item() > 10 * ORACLE_ATOL


def test_zero_lora_equals_the_branch_without_lora(mods, model, reference, lora):
    without = sample(apply(mods, model, None, reference))
    zero_strength = sample(apply(mods, model, lora, reference, strength=0.0))
    zero_up = sample(
        apply(mods, model, mods["lora"].parse_standin_state_dict(lora_state(zero_up=True)), reference)
    )
    with_lora = sample(apply(mods, model, lora, reference))
    assert torch.equal(without, zero_strength)
    assert torch.equal(without, zero_up)
    assert (with_lora - without).abs().max().item() > 1e-3
    oracle = sample(oracle_model(model, reference, None, 0.0))
    assert (without - oracle).abs().max().item() < ORACLE_ATOL


class KeySpy:
    """A previous ``optimized_attention_override``: records every call's keys, runs the backend."""

    def __init__(self):
        self.calls = []

    def __call__(self, func, *args, **kwargs):
        self.calls.append((kwargs.get("transformer_options", {}).get("block_index"), args[0], args[1]))
        return func(*args, **kwargs)


def spied(model_patcher, spy):
    clone = model_patcher.clone()
    clone.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = spy
    return clone


def test_reference_kv_are_computed_once_and_never_see_the_video(mods, model, reference, lora):
    """Per sampling: one reference computation. Its K/V are identical whatever the video noise is — in
    block 1 too, whose reference keys come from block 0's reference attention: reference queries never
    saw a video key. The video keys themselves do change (the test is not blind)."""
    patched = apply(mods, model, lora, reference)
    cache = patched.model_options["transformer_options"]["cvx_standin"].cache
    video_tokens = math.prod(s // p for s, p in zip(LATENT_SHAPE[2:], (1, 2, 2), strict=True))
    reference_keys, video_keys = {}, {}
    for seed in (3, 4):
        spy = KeySpy()
        before = (cache.computed, cache.reused)
        sample(spied(patched, spy), seed=seed)
        assert cache.computed - before[0] == 1, "the reference K/V must be computed once per sampling"
        assert cache.reused - before[1] >= 1
        # self-attention calls carry [video | reference] keys (skip_reshape layout [B, H, L, D])
        self_calls = [(block, k) for block, q, k in spy.calls if k.ndim == 4 and k.shape[2] > video_tokens]
        assert {block for block, _ in self_calls} == {0, 1}
        reference_keys[seed] = {block: k[:, :, video_tokens:].clone() for block, k in self_calls}
        video_keys[seed] = {block: k[:, :, :video_tokens].clone() for block, k in self_calls}
    for block in (0, 1):
        assert torch.equal(reference_keys[3][block], reference_keys[4][block]), f"block {block} saw the video"
        assert not torch.allclose(video_keys[3][block], video_keys[4][block])


def test_cached_equals_recomputed_every_call(mods, model, reference, lora):
    patched = apply(mods, model, lora, reference)
    cached = sample(patched)
    recomputing = apply(mods, model, lora, reference)
    patch = recomputing.model_options["transformer_options"]["cvx_standin"]
    original_get = patch.cache.get

    def always_recompute(key, compute):
        patch.cache.clear()
        return original_get(key, compute)

    patch.cache.get = always_recompute
    recomputed = sample(recomputing)
    assert patch.cache.computed >= 2
    assert torch.equal(cached, recomputed)


def test_a_patch_without_cache_samples_as_the_cached_one(mods, model, reference, lora):
    """``StandInPatch.cache = None`` (how training runs): the sampling wrapper has nothing to empty and the
    reference K/V are recomputed, with autograd, at every call; the result equals the cached sampling."""
    patched = apply(mods, model, lora, reference)
    uncached = model.clone()
    patch = patched.model_options["transformer_options"]["cvx_standin"]
    mods["standin_patch"].install_standin(uncached, dataclasses.replace(patch, cache=None))
    assert uncached.model_options["transformer_options"]["cvx_standin"].cache is None
    assert torch.equal(sample(uncached), sample(patched))


def reference_mass(spy_calls, video_tokens: int) -> float:
    """Mean softmax mass of video queries on the reference keys over the self-attention calls."""
    masses = []
    for _, q, k in spy_calls:
        if k.ndim != 4 or k.shape[2] <= video_tokens:
            continue
        scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        masses.append(scores.softmax(-1)[..., video_tokens:].sum(-1).mean().item())
    return sum(masses) / len(masses)


def test_tab_and_erae_act_on_video_to_reference_logits(mods, model, reference, lora):
    video_tokens = 2 * 4 * 6
    tab = mods["tab"].TABSchedule
    results = {}
    for name, schedule, erae in (
        ("none", None, None),
        ("tab0", tab(shape="constant", peak=0.0), None),
        ("tab3", tab(shape="constant", peak=3.0), None),
        (
            "tab3_erae",
            tab(shape="constant", peak=3.0),
            mods["erae"].ERAEConfig(entity_positions=(0, 1), gamma=2.0),
        ),
    ):
        spy = KeySpy()
        erae_settings = None
        if erae is not None:
            erae_settings = mods["types"].ERAESettings(config=erae)
        out = sample(spied(apply(mods, model, lora, reference, tab=schedule, erae=erae_settings), spy))
        results[name] = (out, reference_mass(spy.calls, video_tokens))
    assert torch.equal(results["none"][0], results["tab0"][0]), "TAB 0 must be the published Stand-In"
    assert (results["tab3"][0] - results["tab0"][0]).abs().max().item() > 1e-3
    assert results["tab3"][1] > results["tab0"][1] + 0.01, results
    assert results["tab3_erae"][1] > results["tab3"][1], results


def test_uncond_without_reference_and_untouched_input(mods, model, reference, lora):
    with left_untouched(model):
        seeing = sample(apply(mods, model, lora, reference, uncond_sees_reference=True))
        blind = sample(apply(mods, model, lora, reference, uncond_sees_reference=False))
        assert (seeing - blind).abs().max().item() > 1e-4


def test_mismatched_file_and_multi_reference_are_refused(mods, model, reference, comfy_host, tiny_models):
    wrong = mods["lora"].parse_standin_state_dict(lora_state(blocks=3, dim=64))
    with pytest.raises(ValueError, match="3 blocks of width 64"):
        apply(mods, model, wrong, reference)
    vae = load_vae(tiny_models.vae_dir, tiny_models.vae)
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    two = node.execute(vae, torch.rand(2, 64, 64, 3), 64, 64, "pad", False, None).args[0]
    with pytest.raises(ValueError, match="one reference image"):
        apply(mods, model, None, two)


def test_loader_node_reads_a_plain_tensor_ckpt_and_refuses_a_pickle(comfy_host, mods, tmp_path):
    loras = comfy_host.models_dir / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": {f"pipe.dit.{k}": v for k, v in lora_state().items()}}, loras / "cvx_test_standin.ckpt"
    )
    node = comfy_host.node_class("CustomVideoXLoadStandIn")
    loaded = node.execute("cvx_test_standin.ckpt").args[0]
    assert loaded.num_blocks == 2 and loaded.rank == RANK and loaded.dim == 128
    torch.save(
        {"blocks.0.self_attn.q_loras.down.weight": torch.zeros(2, 2), "extra": KeySpy()},
        loras / "cvx_bad.ckpt",
    )
    with pytest.raises(mods["lora"].StandInFileError, match="plain tensors"):
        node.execute("cvx_bad.ckpt")


def two_expert_sampling(high, low):
    """Wan 2.2 style: the high-noise expert runs step 0, the low-noise expert step 1 (KSamplerAdvanced)."""
    import comfy.sample
    from nodes_support import conditioning

    latent = torch.zeros(LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(latent, 3)
    common = {"positive": conditioning(1), "negative": conditioning(2), "disable_pbar": True, "seed": 3}
    first = comfy.sample.sample(
        high, noise, 2, 2.0, "euler", "simple", latent_image=latent, start_step=0, last_step=1, **common
    )
    return comfy.sample.sample(
        low,
        noise,
        2,
        2.0,
        "euler",
        "simple",
        latent_image=first,
        start_step=1,
        last_step=2,
        disable_noise=True,
        force_full_denoise=True,
        **common,
    )


def test_two_experts_compute_their_reference_once_each(mods, model, reference, lora, tiny_models):
    """One Apply Stand-In per expert: each fills its own cache once; the result is the uncached oracle's."""
    from tiny_models import write_tiny_wan

    name = "cvx_tiny_wan21_t2v_expert2.safetensors"
    write_tiny_wan(tiny_models.diffusion_models_dir / name, seed=7)
    low_model = load_model(tiny_models.diffusion_models_dir, name)
    high = apply(mods, model, lora, reference)
    low = apply(mods, low_model, lora, reference)
    ours = two_expert_sampling(high, low)
    for patched in (high, low):
        cache = patched.model_options["transformer_options"]["cvx_standin"].cache
        assert cache.computed == 1
    oracle = two_expert_sampling(
        oracle_model(model, reference, lora_state(), 1.0),
        oracle_model(low_model, reference, lora_state(), 1.0),
    )
    assert (ours - oracle).abs().max().item() < ORACLE_ATOL
