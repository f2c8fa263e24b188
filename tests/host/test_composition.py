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
import importlib

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


# --- stacking: chained Apply nodes, Apply with Apply Stand-In -------------------------------------------


def encoded(comfy_host, vae, count: int, seed: int):
    encode = comfy_host.node_class("CustomVideoXReferenceEncode")
    images = reference_images(count, seed=seed)
    return encode.execute(vae, images, VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]


def constant_tab(pack, peak: float):
    return pack.tab.TABSchedule(shape="constant", peak=peak)


def apply_node(comfy_host, pack, model, reference, peak: float, uncond_sees_reference: bool = False):
    apply = comfy_host.node_class("CustomVideoXApply")
    return apply.execute(model, reference, uncond_sees_reference, constant_tab(pack, peak)).args[0]


@pytest.fixture(scope="module")
def subjects(comfy_host, vae):
    """Two one-image references (A, B) and one two-image reference [A, B] of the same images."""
    both = encoded(comfy_host, vae, 2, seed=5)
    first = dataclasses.replace(both, latents=both.latents[:, :, :1], masks=both.masks[:1])
    second = dataclasses.replace(both, latents=both.latents[:, :, 1:], masks=both.masks[1:])
    return first, second, both


@pytest.fixture(scope="module")
def wan(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.wan)


def test_two_apply_nodes_add_their_references(comfy_host, pack, wan, subjects):
    first, second, both = subjects
    for peak in (0.0, 2.0):
        chained = apply_node(comfy_host, pack, apply_node(comfy_host, pack, wan, first, peak), second, peak)
        together = apply_node(comfy_host, pack, wan, both, peak)
        expected = sample(together)
        out = sample(chained)
        assert (out - expected).abs().max().item() < 1e-4, peak
        # nothing dropped: the result is neither reference alone
        for alone in (first, second):
            assert (out - sample(apply_node(comfy_host, pack, wan, alone, peak))).abs().max().item() > 1e-3


def test_each_chained_apply_keeps_its_own_bias(comfy_host, pack, wan, subjects):
    first, second, _ = subjects

    def chained(peak_first, peak_second):
        model = apply_node(
            comfy_host, pack, apply_node(comfy_host, pack, wan, first, peak_first), second, peak_second
        )
        return sample(model)

    base = chained(0.0, 0.0)
    first_only, second_only = chained(3.0, 0.0), chained(0.0, 3.0)
    assert (first_only - base).abs().max().item() > 1e-3
    assert (second_only - base).abs().max().item() > 1e-3
    assert (first_only - second_only).abs().max().item() > 1e-3


def test_apply_without_reference_then_with_one_is_refused_naming_both(comfy_host, pack, wan, subjects):
    first, _, _ = subjects
    apply = comfy_host.node_class("CustomVideoXApply")
    biased_host = apply.execute(wan, None).args[0]
    with pytest.raises(ValueError, match="conditioning.*own reference"):
        apply.execute(biased_host, first)
    with pytest.raises(ValueError, match="own reference.*conditioning"):
        apply.execute(apply.execute(wan, first).args[0], None)


def standin(pack_module, pack, model, reference, peak: float, uncond_sees_reference: bool = False):
    nodes = importlib.import_module(f"{pack_module.__name__}.nodes.standin_nodes")
    return nodes.apply_standin(
        model,
        None,
        reference,
        strength=1.0,
        tab=constant_tab(pack, peak),
        erae=None,
        uncond_sees_reference=uncond_sees_reference,
    )


def test_apply_and_apply_standin_compose_in_either_order(comfy_host, pack_module, pack, wan, subjects):
    first, second, _ = subjects

    def both(peak_apply, peak_standin, *, apply_first=True):
        if apply_first:
            model = standin(
                pack_module, pack, apply_node(comfy_host, pack, wan, first, peak_apply), second, peak_standin
            )
        else:
            model = apply_node(
                comfy_host, pack, standin(pack_module, pack, wan, second, peak_standin), first, peak_apply
            )
        return sample(model)

    base = both(0.0, 0.0)
    assert torch.equal(both(0.0, 0.0, apply_first=False), base)  # the order of the nodes does not matter
    for out in (
        both(2.0, 0.0),
        both(0.0, 2.0),
        both(2.0, 0.0, apply_first=False),
        both(0.0, 2.0, apply_first=False),
    ):
        assert (out - base).abs().max().item() > 1e-3  # the TAB of each one acts
    assert torch.equal(both(2.0, 0.0, apply_first=False), both(2.0, 0.0))
    # both references act: neither alone gives the result
    assert (base - sample(apply_node(comfy_host, pack, wan, first, 0.0))).abs().max().item() > 1e-3
    assert (base - sample(standin(pack_module, pack, wan, second, 0.0))).abs().max().item() > 1e-3


def test_every_model_call_plans_its_sources_once(comfy_host, pack_module, pack, wan, subjects, monkeypatch):
    """Two Apply nodes and Apply Stand-In: one table of three sources, planned once per DiT call (the
    one-source steps the wrapper builds them from never plan themselves)."""
    first, second, _ = subjects
    model = apply_node(comfy_host, pack, wan, first, 2.0, uncond_sees_reference=True)
    model = apply_node(comfy_host, pack, model, second, 1.0, uncond_sees_reference=True)
    model = standin(pack_module, pack, model, first, 1.5, uncond_sees_reference=True)
    core = importlib.import_module(f"{pack_module.__name__}.customvideox_core.reference_sources")
    plans, forwards = [], []
    plan_sources = core.plan_sources

    def counting_plan(sources, batch, device):
        plans.append(tuple(source.name for source in sources))
        return plan_sources(sources, batch, device)

    for module in ("customvideox_core.reference_sources", "customvideox_core.reference_attention",
                   "customvideox_core.standin.video_attention", "nodes.patch"):  # fmt: skip
        monkeypatch.setattr(
            importlib.import_module(f"{pack_module.__name__}.{module}"), "plan_sources", counting_plan
        )
    dit = model.model.diffusion_model
    forward = dit._forward

    def counting_forward(x, *args, **kwargs):
        forwards.append(x.shape[0])
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(dit, "_forward", counting_forward)
    assert torch.isfinite(sample(model, steps=2)).all()
    assert forwards == [2, 2]
    assert plans == [("reference 1", "reference 2", "standin")] * 2


def test_apply_and_apply_standin_share_one_copy_of_the_role_wrappers(
    comfy_host, pack_module, pack, wan, subjects
):
    """Both nodes install the wrappers that give each row its role; on one model they run once."""
    import comfy.patcher_extension

    first, second, _ = subjects
    for model in (
        standin(pack_module, pack, apply_node(comfy_host, pack, wan, first, 1.0), second, 1.0),
        apply_node(comfy_host, pack, standin(pack_module, pack, wan, second, 1.0), first, 1.0),
    ):
        for kind in (
            comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
            comfy.patcher_extension.WrappersMP.CALC_COND_BATCH,
        ):
            found = [
                type(wrapper).__name__
                for wrappers in model.wrappers.get(kind, {}).values()
                for wrapper in wrappers
                if type(wrapper).__name__ in ("GuiderKeys", "ConditioningRoles")
            ]
            assert len(found) == 1, (kind, found)
