"""Concat-ID-Wan (Wan 2.1 1.3B) in a real ComfyUI, judged against Concat-ID's own forward.

The oracle, ``concat_id_forward``, is written from Concat-ID's ``inference_wan.py`` (block ``forward``
of the first stage, ``forward_adaln`` of the AdaLN release) and ``pipelines/wan_video.py``
(``model_fn_wan_video``: the reference frames' RoPE rows get time ``f−R…``, height ``0…h−1``, width
``w…2w−1``), computed with the tiny model's own submodules (projections, norms, feed-forward, head) and
a float64 softmax attention — never through ``rope_encode``, ``cross_attn.forward`` or the blocks'
``forward``, which are what the pack patches. The tiny Wan is ComfyUI's (``write_tiny_wan``); the AdaLN
release adds random ``modulation_ref`` / ``time_projection_ref`` weights.
"""

from __future__ import annotations

import math

import pytest
import torch
from nodes_support import LATENT_SHAPE, VIDEO_HEIGHT, VIDEO_WIDTH, load_model, load_vae, sample
from nodes_support import conditioning as random_conditioning
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import TINY_TEXT_DIM

FIRST_STAGE = "cvx_concat_id_wan_first_stage.safetensors"
ADALN = "cvx_concat_id_wan_adaln.safetensors"
TIMESTEP = 600.0


@pytest.fixture(scope="module")
def files(tiny_models) -> dict[str, dict[str, torch.Tensor]]:
    """Concat-ID-Wan files made from the tiny Wan: first stage = its weights; AdaLN = plus the extras."""
    source = tiny_models.diffusion_models_dir / tiny_models.wan
    state = load_file(str(source))
    with safe_open(str(source), framework="pt") as reader:
        metadata = reader.metadata()  # the tiny Wan's head count and text width (see tiny_models.py)
    generator = torch.Generator().manual_seed(21)
    extras = {
        "time_projection_ref.1.weight": state["time_projection.1.weight"]
        + 0.3 * torch.randn(state["time_projection.1.weight"].shape, generator=generator),
        "time_projection_ref.1.bias": torch.randn(state["time_projection.1.bias"].shape, generator=generator),
    }
    blocks = sorted({int(key.split(".")[1]) for key in state if key.startswith("blocks.")})
    for index in blocks:
        modulation = state[f"blocks.{index}.modulation"]
        extras[f"blocks.{index}.modulation_ref"] = modulation + torch.randn(
            modulation.shape, generator=generator
        )
    directory = tiny_models.diffusion_models_dir
    save_file(state, str(directory / FIRST_STAGE), metadata=metadata)
    save_file({**state, **extras}, str(directory / ADALN), metadata=metadata)
    return {FIRST_STAGE: {}, ADALN: extras}


def load_concat_id(comfy_host, name: str):
    node = comfy_host.node_class("CustomVideoXLoadConcatIDWan")
    return node.execute(name, "default").args[0]


def encode_reference(comfy_host, tiny_models):
    vae = load_vae(tiny_models.vae_dir, tiny_models.vae)
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    images = torch.rand(1, VIDEO_HEIGHT, VIDEO_WIDTH, 3, generator=torch.Generator().manual_seed(9))
    return node.execute(vae, images, VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]


def naive_attention(query, key, value, heads: int):
    batch, length, channels = query.shape
    split = [t.double().unflatten(-1, (heads, -1)).transpose(1, 2) for t in (query, key, value)]
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / math.sqrt(channels // heads), dim=-1)
    return (weights @ split[2]).transpose(1, 2).reshape(batch, length, channels).to(query.dtype)


def concat_id_forward(dit, latents, timestep, context, reference_frames: int, extras: dict):
    """Concat-ID-Wan's forward on ``[video | reference]`` latents; returns the video frames' prediction."""
    from comfy.ldm.flux.math import apply_rope1
    from comfy.ldm.wan.model import sinusoidal_embedding_1d

    heads, dim = dit.num_heads, dit.dim
    x = dit.patch_embedding(latents.float())
    frames, height, width = x.shape[2:]
    x = x.flatten(2).transpose(1, 2)
    batch, length = x.shape[:2]
    e = dit.time_embedding(sinusoidal_embedding_1d(dit.freq_dim, timestep))
    t_mod = dit.time_projection(e).unflatten(1, (6, dim))
    adaln = bool(extras)
    if adaln:
        silu = torch.nn.functional.silu(e)
        t_mod_ref = torch.nn.functional.linear(
            silu, extras["time_projection_ref.1.weight"], extras["time_projection_ref.1.bias"]
        ).unflatten(1, (6, dim))
    context = dit.text_embedding(context)
    grid = torch.stack(
        torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"), dim=-1
    ).float()
    grid[frames - reference_frames :, :, :, 2] += width  # the reference's width shifted by one frame width
    freqs = dit.rope_embedder(grid.reshape(1, -1, 3)).movedim(1, 2)
    n = reference_frames * height * width

    def modulate(tokens, shift, scale):
        return tokens * (1 + scale) + shift

    for index, block in enumerate(dit.blocks):
        s_msa, c_msa, g_msa, s_mlp, c_mlp, g_mlp = (block.modulation + t_mod).chunk(6, dim=1)
        attention, cross = block.self_attn, block.cross_attn

        def self_attention(tokens, attention=attention):
            q = apply_rope1(attention.norm_q(attention.q(tokens)).view(batch, length, heads, -1), freqs)
            k = apply_rope1(attention.norm_k(attention.k(tokens)).view(batch, length, heads, -1), freqs)
            out = naive_attention(q.flatten(2), k.flatten(2), attention.v(tokens), heads)
            return attention.o(out)

        def cross_attention(tokens, cross=cross):
            out = naive_attention(
                cross.norm_q(cross.q(tokens)), cross.norm_k(cross.k(context)), cross.v(context), heads
            )
            return cross.o(out)

        if not adaln:  # inference_wan.py: forward
            x = x + g_msa * self_attention(modulate(block.norm1(x), s_msa, c_msa))
            x = torch.cat([x[:, :-n] + cross_attention(block.norm3(x[:, :-n])), x[:, -n:]], dim=1)
            x = x + g_mlp * block.ffn(modulate(block.norm2(x), s_mlp, c_mlp))
            continue
        # inference_wan.py: forward_adaln
        r_s_msa, r_c_msa, r_g_msa, _, _, r_g_mlp = (
            extras[f"blocks.{index}.modulation_ref"] + t_mod_ref
        ).chunk(6, dim=1)
        normed = block.norm1(x)
        inputs = torch.cat(
            [modulate(normed[:, :-n], s_msa, c_msa), modulate(normed[:, -n:], r_s_msa, r_c_msa)], 1
        )
        out = self_attention(inputs)
        x = torch.cat([x[:, :-n] + g_msa * out[:, :-n], x[:, -n:] + r_g_msa * out[:, -n:]], dim=1)
        x = torch.cat([x[:, :-n] + cross_attention(block.norm3(x[:, :-n])), x[:, -n:]], dim=1)
        normed = block.norm2(x)
        inputs = torch.cat(
            [modulate(normed[:, :-n], s_mlp, c_mlp), modulate(normed[:, -n:], r_s_msa, r_c_msa)], 1
        )
        out = block.ffn(inputs)
        x = torch.cat([x[:, :-n] + g_mlp * out[:, :-n], x[:, -n:] + r_g_mlp * out[:, -n:]], dim=1)
    x = dit.head(x, e.unsqueeze(1))
    return dit.unpatchify(x, (frames, height, width))[:, :, : frames - reference_frames]


def run_patched(pack, model, reference, x, timestep, context, peak: float):
    import comfy.model_management

    schedule = pack.tab.TABSchedule(shape="constant", peak=peak)
    patched = pack.patch.apply_reference_patch(
        model, reference, tab=schedule, erae=None, uncond_sees_reference=True
    )
    comfy.model_management.load_models_gpu([patched])  # applies the object patches, as sampling does
    options = dict(patched.model_options["transformer_options"])
    options["wrappers"] = patched.wrappers
    with torch.no_grad():
        return patched.model.diffusion_model(x, timestep, context, transformer_options=options)


@pytest.mark.parametrize("name", [FIRST_STAGE, ADALN])
def test_reference_path_at_tab_zero_is_concat_id_wan_forward(comfy_host, pack, tiny_models, files, name):
    model = load_concat_id(comfy_host, name)
    reference = encode_reference(comfy_host, tiny_models)
    generator = torch.Generator().manual_seed(13)
    x = torch.randn(LATENT_SHAPE, generator=generator)
    timestep = torch.tensor([TIMESTEP])
    context = random_conditioning(4)[0][0]
    reference_latents = model.model.process_latent_in(reference.latents.clone())
    with torch.no_grad():
        expected = concat_id_forward(
            model.model.diffusion_model,
            torch.cat([x, reference_latents], dim=2),
            timestep,
            context,
            1,
            files[name],
        )
    out = run_patched(pack, model, reference, x, timestep, context, peak=0.0)
    scale = float(expected.abs().max())
    assert out.shape == x.shape
    assert torch.allclose(out, expected, atol=1e-4 * scale, rtol=0), (
        f"max diff {(out - expected).abs().max():.3g} at scale {scale:.3g}"
    )
    biased = run_patched(pack, model, reference, x, timestep, context, peak=4.0)
    assert (biased - expected).abs().max() > 1e-2 * scale


def test_core_time_dim_concat_frames_get_concat_id_handling_too(comfy_host, tiny_models, files):
    """Wan's own reference input (core's WanPhantomSubjectToVideo puts the frames in time_dim_concat)
    is appended by WanModel._forward after the video: the patches treat those frames as Concat-ID's."""
    import comfy.model_management

    model = load_concat_id(comfy_host, ADALN)
    reference = encode_reference(comfy_host, tiny_models)
    x = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(17))
    timestep = torch.tensor([TIMESTEP])
    context = random_conditioning(4)[0][0]
    reference_latents = model.model.process_latent_in(reference.latents.clone())
    dit = model.model.diffusion_model
    with torch.no_grad():
        expected = concat_id_forward(
            dit, torch.cat([x, reference_latents], dim=2), timestep, context, 1, files[ADALN]
        )
        comfy.model_management.load_models_gpu([model])
        options = {**model.model_options["transformer_options"], "wrappers": model.wrappers}
        out = dit(x, timestep, context, time_dim_concat=reference_latents, transformer_options=options)
    scale = float(expected.abs().max())
    assert torch.allclose(out, expected, atol=1e-4 * scale, rtol=0), (
        f"max diff {(out - expected).abs().max():.3g}"
    )


def test_patches_are_what_makes_it_concat_id(comfy_host, pack, tiny_models, files):
    """The same weights loaded as a plain Wan, through the pack's plain reference path, differ from the
    oracle (so each Concat-ID patch matters); without a reference the Concat-ID model is plain Wan."""
    plain = load_model(tiny_models.diffusion_models_dir, FIRST_STAGE)
    reference = encode_reference(comfy_host, tiny_models)
    x = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(13))
    timestep = torch.tensor([TIMESTEP])
    context = random_conditioning(4)[0][0]
    reference_latents = plain.model.process_latent_in(reference.latents.clone())
    with torch.no_grad():
        expected = concat_id_forward(
            plain.model.diffusion_model, torch.cat([x, reference_latents], dim=2), timestep, context, 1, {}
        )
    out = run_patched(pack, plain, reference, x, timestep, context, peak=0.0)
    assert (out - expected).abs().max() > 1e-2 * float(expected.abs().max())
    concat_id = load_concat_id(comfy_host, ADALN)
    assert torch.equal(
        sample(concat_id), sample(load_model(tiny_models.diffusion_models_dir, tiny_models.wan))
    )


def test_sampling_with_the_reference_runs_and_keeps_the_video_shape(comfy_host, pack, tiny_models, files):
    model = load_concat_id(comfy_host, ADALN)
    reference = encode_reference(comfy_host, tiny_models)
    schedule = pack.tab.TABSchedule(shape="constant", peak=1.0)
    patched = pack.patch.apply_reference_patch(
        model, reference, tab=schedule, erae=None, uncond_sees_reference=True
    )
    out = sample(patched)
    assert tuple(out.shape) == LATENT_SHAPE and torch.isfinite(out).all()
    assert model.cached_patcher_init is not None


def test_partial_reference_adaln_is_refused(comfy_host, tiny_models, files):
    state = load_file(str(tiny_models.diffusion_models_dir / ADALN))
    del state["blocks.1.modulation_ref"]
    save_file(state, str(tiny_models.diffusion_models_dir / "cvx_concat_id_wan_partial.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['blocks.1.modulation_ref'\]"):
        load_concat_id(comfy_host, "cvx_concat_id_wan_partial.safetensors")


@pytest.mark.parametrize("name", [FIRST_STAGE, ADALN])
def test_a_row_that_does_not_see_the_reference_is_the_plain_model(comfy_host, pack, tiny_models, files, name):
    """cfg with uncond_sees_reference off: the unconditional row equals the model without a reference.
    (Concat-ID-Wan's wrapper runs outside the reference wrapper and sizes its state for the whole batch,
    so such a call is never split by rows: the blind row drops the reference keys in attention.)"""
    import comfy.model_management

    model = load_concat_id(comfy_host, name)
    reference = encode_reference(comfy_host, tiny_models)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn((2, *LATENT_SHAPE[1:]), generator=generator)
    timestep = torch.tensor([700.0, 700.0])
    context = torch.randn(2, 6, TINY_TEXT_DIM, generator=generator)
    schedule = pack.tab.TABSchedule(shape="constant", peak=1.0)
    outputs = []
    for patcher in (
        pack.patch.apply_reference_patch(
            model, reference, tab=schedule, erae=None, uncond_sees_reference=False
        ),
        model,
    ):
        comfy.model_management.load_models_gpu([patcher])
        options = {**patcher.model_options["transformer_options"], "wrappers": patcher.wrappers}
        options["cond_or_uncond"] = [0, 1]
        with torch.no_grad():
            outputs.append(patcher.model.diffusion_model(x, timestep, context, transformer_options=options))
    patched, plain = outputs
    assert (patched[1] - plain[1]).abs().max().item() < 1e-4
    assert (patched[0] - plain[0]).abs().max().item() > 1e-3, "the positive row must see the reference"
