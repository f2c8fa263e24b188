"""The pack among the nodes people stack on a video model (issue #20): caches placed after Apply.

EasyCache (a ``DIFFUSION_MODEL`` wrapper) and LazyCache (a ``PREDICT_NOISE`` wrapper) decide per step
whether to run the model from how much its output changed. Placed after CustomVideoX Apply they must see
what they see on the plain model: one model call per step, of the video's own shape, so that they skip
the same steps. The oracle is the same cache on the unpatched model: the same number of computed steps.
What reaches the model is counted by a ``DIFFUSION_MODEL`` wrapper added after the cache (it runs inside
the cache's, outside the pack's).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from nodes_support import LATENT_SHAPE, VIDEO_HEIGHT, VIDEO_WIDTH, load_model, reference_images, sample

STEPS = 8
THRESHOLD = 1.0
"""EasyCache's and LazyCache's reuse threshold: high enough that the tiny random model skips some steps."""


class CallSpy:
    """A ``DIFFUSION_MODEL`` wrapper: records (rows, frames) of every model call that reaches it."""

    def __init__(self):
        self.calls = []

    def __call__(self, executor, *args, **kwargs):
        self.calls.append((args[0].shape[0], args[0].shape[2]))
        return executor(*args, **kwargs)


def with_cache(comfy_host, model, cache: str):
    """``model`` → the core cache node (EasyCache or LazyCache) → a spy, as a user chains them."""
    import comfy.patcher_extension

    node = comfy_host.node_class(cache)
    cached = node.execute(model, THRESHOLD, 0.15, 0.95, False).args[0]
    spy = CallSpy()
    cached.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "cvx_test_spy", spy)
    return cached, spy


def encoded_reference(comfy_host, vae):
    encode = comfy_host.node_class("CustomVideoXReferenceEncode")
    return encode.execute(vae, reference_images(1), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]


def applied(comfy_host, model, vae, *, tab_peak: float = 0.0):
    """Apply with one reference image, a constant TAB of ``tab_peak``, the negative blind."""
    tab = comfy_host.node_class("CustomVideoXTimeAwareBias")
    schedule = tab.execute("constant", tab_peak, 0.0, 0.0, 1.0, "").args[0]
    apply = comfy_host.node_class("CustomVideoXApply")
    return apply.execute(model, encoded_reference(comfy_host, vae), False, schedule).args[0]


def applied_and_blocked(comfy_host, pack, model, vae):
    """Apply whose every reference key is dropped (an empty subject mask, ``block_outside_mask``): the
    rows are still split and the frames still appended, but the video's prediction is the plain model's."""
    reference = encoded_reference(comfy_host, vae)
    empty = dataclasses.replace(reference, masks=torch.zeros_like(reference.masks))
    return pack.patch.apply_reference_patch(
        model,
        empty,
        tab=pack.tab.TABSchedule(shape="constant", peak=2.0),
        erae=pack.erae.ERAEConfig(gamma=0.0, block_outside_mask=True),
        uncond_sees_reference=False,
    )


@pytest.mark.parametrize("cache", ["EasyCache", "LazyCache"])
def test_a_cache_after_apply_skips_the_steps_it_skips_on_the_plain_model(
    comfy_host, pack, vae, tiny_models, cache
):
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.wan)
    plain, plain_spy = with_cache(comfy_host, model, cache)
    expected = sample(plain, steps=STEPS)
    computed = len(plain_spy.calls)
    assert 0 < computed < STEPS, f"the oracle must skip some steps and compute others: {plain_spy.calls}"

    patched, spy = with_cache(comfy_host, applied_and_blocked(comfy_host, pack, model, vae), cache)
    out = sample(patched, steps=STEPS)
    # one call per computed step, cond and uncond rows together, the video's own frames only
    assert spy.calls == [(2, LATENT_SHAPE[2])] * computed, (computed, spy.calls)
    assert (out - expected).abs().max().item() < 1e-4


def test_easycache_after_apply_skips_as_easycache_before_apply(comfy_host, vae, tiny_models):
    """With a reference that acts, the cache placed next to the sampler behaves as placed before Apply."""
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.wan)
    before, before_spy = with_cache(comfy_host, model, "EasyCache")
    expected = sample(applied(comfy_host, before, vae), steps=STEPS)
    assert 0 < len(before_spy.calls) < STEPS, before_spy.calls

    after, spy = with_cache(comfy_host, applied(comfy_host, model, vae), "EasyCache")
    out = sample(after, steps=STEPS)
    assert spy.calls == before_spy.calls
    assert torch.equal(out, expected)


def test_the_pack_still_splits_its_rows_inside(comfy_host, vae, tiny_models, monkeypatch):
    """The blind/seeing row split happens, below every other wrapper: the DiT itself is called twice."""
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.wan)
    patched, spy = with_cache(comfy_host, applied(comfy_host, model, vae, tab_peak=2.0), "EasyCache")
    dit = patched.model.diffusion_model
    frames = []
    forward = dit._forward

    def counting_forward(x, *args, **kwargs):
        frames.append((x.shape[0], x.shape[2]))
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(dit, "_forward", counting_forward)
    out = sample(patched, steps=2)
    assert torch.isfinite(out).all()
    assert spy.calls == [(2, LATENT_SHAPE[2])] * 2
    assert frames == [(1, LATENT_SHAPE[2] + 1), (1, LATENT_SHAPE[2])] * 2, frames
