"""The reference patch inside a real ComfyUI, judged against the unpatched model (the oracle).

Tiny random-weight CogVideoX (5B-style RoPE, 2B-style positions table, 1.5 temporal patches) and Wan
models, built with ComfyUI's own classes; sampling runs through ComfyUI's own sampler.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from nodes_support import (
    LATENT_SHAPE,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Pack,
    left_untouched,
    load_model,
    reference_images,
    sample,
)

HOSTS = ["cogvideox-5b", "cogvideox-2b", "cogvideox-1.5", "wan"]
# float32 sampling: a blocked reference changes the sequence length (and the kernel's summation order)
# but no attention weight, so the outputs agree to float32 rounding of ~unit-size latents.
BLOCKED_ATOL = 5e-4


@pytest.fixture(scope="module")
def models(tiny_models) -> dict:
    names = {f"cogvideox-{v}": tiny_models.cogvideox[v] for v in ("5b", "2b", "1.5")}
    names["wan"] = tiny_models.wan
    return {host: load_model(tiny_models.diffusion_models_dir, name) for host, name in names.items()}


@pytest.fixture(scope="module")
def baselines(models) -> dict:
    return {host: sample(model) for host, model in models.items()}


def encode_reference(comfy_host, vae, count: int, mask=None, fit: str = "pad"):
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    images = reference_images(count)
    output = node.execute(vae, images, VIDEO_WIDTH, VIDEO_HEIGHT, fit, False, mask)
    return output.args[0]


def patched(pack: Pack, model, reference, *, peak: float, erae=None, uncond_sees_reference: bool = True):
    schedule = pack.tab.TABSchedule(shape="constant", peak=peak)
    return pack.patch.apply_reference_patch(
        model, reference, tab=schedule, erae=erae, uncond_sees_reference=uncond_sees_reference
    )


@pytest.mark.parametrize("host", HOSTS)
def test_blocked_reference_reproduces_the_unpatched_model(comfy_host, pack, vae, models, baselines, host):
    """Every reference key blocked (zero mask + block_outside_mask) → the plain model's video. The zero
    mask is put on the encoded reference: ReferenceEncode sets an all-zero mask aside (it is LoadImage's
    placeholder for an image without transparency; see test_bad_inputs)."""
    encoded = encode_reference(comfy_host, vae, 1)
    reference = dataclasses.replace(encoded, masks=torch.zeros_like(encoded.masks))
    erae = pack.erae.ERAEConfig(entity_positions=(0,), gamma=0.0, block_outside_mask=True)
    out = sample(patched(pack, models[host], reference, peak=4.0, erae=erae))
    assert out.shape == baselines[host].shape
    assert torch.allclose(out, baselines[host], atol=BLOCKED_ATOL, rtol=0), (
        f"max diff {(out - baselines[host]).abs().max():.3g}"
    )


@pytest.mark.parametrize("host", HOSTS)
def test_visible_reference_changes_the_video(comfy_host, pack, vae, models, baselines, host):
    """Bias 0 (reference visible, no TAB) already differs; a larger TAB moves the video further."""
    reference = encode_reference(comfy_host, vae, 1)
    diffs = []
    for peak in (0.0, 4.0):
        out = sample(patched(pack, models[host], reference, peak=peak))
        diffs.append(float((out - baselines[host]).abs().mean()))
    assert diffs[0] > 1e-3
    assert diffs[1] > diffs[0]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("count", [1, 2, 3])
def test_no_reference_frame_reaches_the_output(comfy_host, pack, vae, models, baselines, host, count):
    reference = encode_reference(comfy_host, vae, count)
    assert reference.latents.shape[2] == count
    out = sample(patched(pack, models[host], reference, peak=1.0))
    assert tuple(out.shape) == LATENT_SHAPE
    assert torch.isfinite(out).all()


class AttentionMassProbe:
    """An earlier attention override in the chain: ours calls it as the backend with the augmented
    (biased) query/key, so softmax(q'·k'ᵀ/√D') is the attention the backend really computes."""

    def __init__(self) -> None:
        self.masses: list[float] = []
        self.layout = None

    def __call__(self, func, *args, **kwargs):
        if kwargs.get("skip_reshape") and self.layout is not None:
            query, key = args[0], args[1]
            scores = torch.softmax(
                query.double() @ key.double().transpose(-1, -2) / math.sqrt(query.shape[-1]), -1
            )
            rows = scores[:, :, self.layout.video_slice]
            self.masses.append(float(rows[..., self.layout.reference_slice].sum(-1).mean()))
        return func(*args, **kwargs)


@pytest.mark.parametrize("host", ["cogvideox-5b", "wan"])
def test_raising_tab_raises_attention_mass_on_the_reference(comfy_host, pack, vae, models, host, monkeypatch):
    reference = encode_reference(comfy_host, vae, 1)
    means = []
    geometry = pack.patch.SequenceGeometry
    original_join = geometry.join
    for peak in (0.0, 2.0, 6.0):
        model = patched(pack, models[host], reference, peak=peak)
        probe = AttentionMassProbe()
        model.model_options["transformer_options"]["optimized_attention_override"] = probe

        def join(*args, _probe=probe):
            video, ref, layout = original_join(*args)
            _probe.layout = layout
            return video, ref, layout

        monkeypatch.setattr(geometry, "join", join)
        sample(model, steps=1)
        assert probe.masses, "the backend was never called with biased attention"
        means.append(sum(probe.masses) / len(probe.masses))
    assert means[0] < means[1] < means[2], means


def test_uncond_pass_without_reference_matches_cfg_of_plain_uncond(comfy_host, pack, vae, models, baselines):
    """cfg=1 runs the conditional pass only; its result is the same whichever way the switch is."""
    reference = encode_reference(comfy_host, vae, 1)
    model = models["cogvideox-5b"]
    off = sample(patched(pack, model, reference, peak=1.0, uncond_sees_reference=False), cfg=1.0)
    on = sample(patched(pack, model, reference, peak=1.0, uncond_sees_reference=True), cfg=1.0)
    assert torch.allclose(off, on, atol=1e-6)
    off_cfg = sample(patched(pack, model, reference, peak=1.0, uncond_sees_reference=False), cfg=3.0)
    on_cfg = sample(patched(pack, model, reference, peak=1.0, uncond_sees_reference=True), cfg=3.0)
    assert (off_cfg - on_cfg).abs().max() > 1e-4


def test_batch_of_two_matches_two_single_runs(comfy_host, pack, vae, models):
    """batch_size 2: each row equals the same seed's single-row result (rows do not leak)."""
    import comfy.sample

    reference = encode_reference(comfy_host, vae, 1)
    model = patched(pack, models["cogvideox-5b"], reference, peak=2.0, uncond_sees_reference=False)
    latent = torch.zeros(2, *LATENT_SHAPE[1:])
    noise = comfy.sample.prepare_noise(latent, 5)
    both = comfy.sample.sample(
        model, noise, 2, 2.0, "euler", "simple", _cond(1), _cond(2), latent, disable_pbar=True, seed=5
    )
    for row in range(2):
        single = comfy.sample.sample(
            model,
            noise[row : row + 1],
            2,
            2.0,
            "euler",
            "simple",
            _cond(1),
            _cond(2),
            latent[:1],
            disable_pbar=True,
            seed=5,
        )
        # Rows are attended in row groups (seeing / not seeing the reference) whose size differs between
        # the two runs, so float32 sums run in another order: BLOCKED_ATOL, far below a leak between rows
        # (a reference effect is > 1e-2, see test_visible_reference_changes_the_video).
        difference = float((both[row : row + 1] - single).abs().max())
        assert difference < BLOCKED_ATOL, difference


def run_sample_node(comfy_host, model, reference, *, seed: int, steps: int, tab=None):
    """CustomVideoXSample at the test size (5 frames, cfg 2, euler/simple) → the video latent."""
    node = comfy_host.node_class("CustomVideoXSample")
    output = node.execute(
        model=model,
        positive=_cond(1),
        negative=_cond(2),
        reference=reference,
        width=VIDEO_WIDTH,
        height=VIDEO_HEIGHT,
        length=5,
        seed=seed,
        steps=steps,
        cfg=2.0,
        sampler_name="euler",
        scheduler="simple",
        denoise=1.0,
        uncond_sees_reference=False,
        tab=tab,
    )
    return output.args[0]["samples"]


def _cond(seed):
    from nodes_support import conditioning

    return conditioning(seed)


def test_sample_node_leaves_the_input_model_untouched(comfy_host, pack, vae, models):
    model = models["cogvideox-5b"]
    with left_untouched(model):
        reference = encode_reference(comfy_host, vae, 2)
        tab = (
            comfy_host.node_class("CustomVideoXTimeAwareBias")
            .execute("parabolic", 2.0, 0.0, 0.0, 1.0, "")
            .args[0]
        )
        out = run_sample_node(comfy_host, model, reference, seed=1, steps=1, tab=tab)
        assert tuple(out.shape) == LATENT_SHAPE
        applied = (
            comfy_host.node_class("CustomVideoXApply")
            .execute(model=model, reference=reference, uncond_sees_reference=False, tab=tab)
            .args[0]
        )
        assert applied is not model


def test_apply_then_ksampler_equals_sample_node(comfy_host, pack, vae, models):
    """CustomVideoXApply + core sampling gives exactly what CustomVideoXSample gives."""
    model = models["wan"]
    reference = encode_reference(comfy_host, vae, 1)
    applied = (
        comfy_host.node_class("CustomVideoXApply")
        .execute(model=model, reference=reference, uncond_sees_reference=False)
        .args[0]
    )
    via_apply = sample(applied, seed=9, steps=2, cfg=2.0)
    via_sample = run_sample_node(comfy_host, model, reference, seed=9, steps=2)
    assert torch.allclose(via_apply, via_sample, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# NaN in, clear error out. The broken VAE is the tiny VAE's own object with its ``encode`` wrapped
# (ComfyUI's code is untouched): it returns what the real encode returns with NaN or inf written into
# it, as broken weights or an fp16 overflow would. The oracle is the error text: it names the VAE's
# class and dtype, or the input.
# ---------------------------------------------------------------------------------------------------


def broken_vae(vae, value: float):
    """A shallow copy of ``vae`` whose ``encode`` writes ``value`` into one latent of each result."""
    broken = copy.copy(vae)
    real_encode = vae.encode

    def encode(pixels):
        latent = real_encode(pixels).clone()
        latent.view(-1)[3] = value
        return latent

    broken.encode = encode
    return broken


def encode_one(comfy_host, vae, mask=None):
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return node.execute(vae, reference_images(1), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, mask).args[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_reference_encode_refuses_non_finite_vae_latents_naming_the_vae(comfy_host, vae, value):
    encode_one(comfy_host, vae)  # the same VAE without the fault encodes fine
    with pytest.raises(ValueError) as caught:
        encode_one(comfy_host, broken_vae(vae, value))
    message = str(caught.value)
    assert type(vae.first_stage_model).__name__ in message
    assert str(vae.vae_dtype) in message
    assert ("1 NaN" if value != value else "1 infinite") in message
    assert "fp32-vae" in message


def test_reference_encode_refuses_a_nan_mask(comfy_host, vae):
    mask = torch.ones(1, VIDEO_HEIGHT, VIDEO_WIDTH)
    mask[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encode_one(comfy_host, vae, mask)


@pytest.mark.parametrize("node_id", ["CustomVideoXApply", "CustomVideoXSample"])
def test_apply_and_sample_refuse_non_finite_reference_latents_and_masks(comfy_host, vae, models, node_id):
    model = models["cogvideox-5b"]
    good = encode_one(comfy_host, vae)
    latents = good.latents.clone()
    latents[0, 0, 0, 0, 0] = float("nan")
    masks = good.masks.clone()
    masks[0, 0, 0] = float("inf")
    cases = {
        "the reference latents": dataclasses.replace(good, latents=latents),
        "subject mask": dataclasses.replace(good, masks=masks),
    }

    def run(reference):
        if node_id == "CustomVideoXApply":
            return (
                comfy_host.node_class(node_id)
                .execute(model=model, reference=reference, uncond_sees_reference=False)
                .args[0]
            )
        return run_sample_node(comfy_host, model, reference, seed=0, steps=1)

    assert run(good) is not None  # the finite reference is accepted
    for expected, reference in cases.items():
        with pytest.raises(ValueError, match=expected):
            run(reference)


def test_apply_refuses_a_non_finite_erae_mask(comfy_host, pack, vae, models):
    model = models["cogvideox-5b"]
    good = encode_one(comfy_host, vae)
    mask = torch.ones(1, *good.source_size)
    mask[0, 1, 1] = float("nan")
    erae = pack.types.ERAESettings(config=pack.erae.ERAEConfig(), reference_mask=mask)
    with pytest.raises(ValueError, match="ERAEMask's reference_mask"):
        comfy_host.node_class("CustomVideoXApply").execute(
            model=model, reference=good, uncond_sees_reference=False, erae=erae
        )
