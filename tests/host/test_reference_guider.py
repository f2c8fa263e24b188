"""The Reference Guider inside a real ComfyUI: core's DualCFGGuider is the oracle, model passes are counted.

Tiny random-weight Wan 2.1 (Phantom-Wan is a Wan 2.1 T2V checkpoint with stock keys) and core's
``WanPhantomSubjectToVideo`` conditionings (positive, negative_text, negative_img_text).
"""

from __future__ import annotations

import sys

import pytest
import torch
from harness import REPO_ROOT
from nodes_support import (
    LATENT_SHAPE,
    VIDEO_FRAMES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    conditioning,
    euler_sigmas,
    guided_sample,
    load_model,
    reference_images,
)

STEPS = 6
TEXT_CFG, IMAGE_CFG = 3.0, 2.0


@pytest.fixture(scope="module")
def wan(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.wan)


@pytest.fixture(scope="module")
def phantom(comfy_host, vae) -> dict:
    node = comfy_host.node_class("WanPhantomSubjectToVideo")
    positive, negative_text, negative_img_text, _ = node.execute(
        conditioning(1), conditioning(2), vae, VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FRAMES, 1, reference_images(1)
    ).args
    return {"positive": positive, "negative_text": negative_text, "negative_img_text": negative_img_text}


@pytest.fixture(scope="module")
def counted(comfy_host):
    """``counted(model)``: a clone of ``model`` whose DiT calls are counted, and the counter (the
    benchmarks' ``counted_clone``: ``calls``, and ``passes``, the batch rows they run)."""
    sys.path.append(str(REPO_ROOT / "benchmarks"))
    from _host_models import counted_clone

    return counted_clone


def sample_with(guider, model, *, steps: int = STEPS) -> torch.Tensor:
    return guided_sample(guider, model, steps)


def ours(
    comfy_host,
    model,
    conds,
    *,
    cfg=TEXT_CFG,
    image_cfg=IMAGE_CFG,
    start=0.0,
    end=1.0,
    cfg_steps="",
    image_steps="",
):
    node = comfy_host.node_class("CustomVideoXReferenceGuider")
    return node.execute(
        model,
        conds["positive"],
        conds["negative_text"],
        cfg,
        image_cfg,
        start,
        end,
        cfg_steps,
        image_steps,
        conds["negative_img_text"],
    ).args[0]


def core_dual_cfg(model, conds, cfg=TEXT_CFG, image_cfg=IMAGE_CFG):
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    guider = Guider_DualCFG(model)
    guider.set_conds(conds["positive"], conds["negative_text"], conds["negative_img_text"])
    guider.set_cfg(cfg, image_cfg)
    return guider


@pytest.mark.parametrize(("cfg", "image_cfg"), [(TEXT_CFG, IMAGE_CFG), (TEXT_CFG, 1.0), (1.0, 1.0)])
def test_constant_scales_equal_cores_dual_cfg_guider(comfy_host, wan, phantom, cfg, image_cfg):
    """Inside the window with constant scales: exactly core's DualCFGGuider over core's Phantom conditionings."""
    expected = sample_with(core_dual_cfg(wan, phantom, cfg, image_cfg), wan)
    result = sample_with(ours(comfy_host, wan, phantom, cfg=cfg, image_cfg=image_cfg), wan)
    assert (result - expected).abs().max().item() < 1e-6


def test_patched_model_with_own_reference_equals_dual_cfg_over_marked_conditionings(comfy_host, vae, wan):
    """With the pack's own reference (Apply, TAB 0), the guider is DualCFG over the pack's marked passes."""
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    encode = comfy_host.node_class("CustomVideoXReferenceEncode")
    reference = encode.execute(vae, reference_images(1), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[
        0
    ]
    tab = (
        comfy_host.node_class("CustomVideoXTimeAwareBias").execute("constant", 0.0, 0.0, 0.0, 1.0, "").args[0]
    )
    patched = comfy_host.node_class("CustomVideoXApply").execute(wan, reference, False, tab=tab).args[0]
    mark = comfy_host.node_class("CustomVideoXReferenceConditioning")
    conds = {"positive": conditioning(1), "negative_text": conditioning(2), "negative_img_text": None}
    guider = (
        comfy_host.node_class("CustomVideoXReferenceGuider")
        .execute(patched, conds["positive"], conds["negative_text"], TEXT_CFG, IMAGE_CFG, 0.0, 1.0)
        .args[0]
    )
    oracle = Guider_DualCFG(patched)
    oracle.set_conds(
        conds["positive"],
        mark.execute(conds["negative_text"], True).args[0],
        mark.execute(conds["negative_text"], False).args[0],
    )
    oracle.set_cfg(TEXT_CFG, IMAGE_CFG)
    assert (sample_with(guider, patched) - sample_with(oracle, patched)).abs().max().item() < 1e-6


@pytest.mark.parametrize(
    ("settings", "passes"),
    [
        ({}, 3 * STEPS),  # Phantom's three passes at every step
        ({"end": 0.4}, 3 * 3 + 2 * 3),  # image pass in the steps that reach into the first 40 %
        ({"image_cfg": 1.0}, 2 * STEPS),  # plain cfg against the negative that sees the reference
        (
            {"cfg_steps": "3, 3, 1, 1, 1, 1", "image_steps": "2, 2, 1, 1, 1, 1"},
            3 * 2 + 1 * 4,
        ),  # distill recipe
        ({"cfg_steps": "3, 3, 3, 1, 1, 1", "end": 0.3}, 3 * 2 + 2 * 1 + 1 * 3),
    ],
)
def test_model_passes_are_only_those_the_scales_need(comfy_host, counted, wan, phantom, settings, passes):
    model, counter = counted(wan)
    sample_with(ours(comfy_host, model, phantom, **settings), model)
    assert counter.passes == passes


def test_core_dual_cfg_runs_three_passes_per_step(counted, wan, phantom):
    """The comparison point of the counts above (the counter sees every pass)."""
    model, counter = counted(wan)
    sample_with(core_dual_cfg(model, phantom), model)
    assert counter.passes == 3 * STEPS


def test_a_windowed_run_equals_dual_cfg_inside_and_cfg_outside(comfy_host, wan, phantom):
    """Two samplers over one schedule: DualCFG for steps 0–2, plain cfg (negative with the reference) for
    3–5, is what the guider with image window 0–0.5 gives in one run."""
    import comfy.sample
    import comfy.samplers

    sigmas = euler_sigmas(wan, STEPS)
    latent = torch.zeros(LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(latent, 3)
    euler = comfy.samplers.sampler_object("euler")
    first = core_dual_cfg(wan, phantom).sample(noise, latent, euler, sigmas[:4], disable_pbar=True, seed=3)
    cfg = comfy.samplers.CFGGuider(wan)
    cfg.set_conds(phantom["positive"], phantom["negative_text"])
    cfg.set_cfg(TEXT_CFG)
    expected = cfg.sample(torch.zeros_like(noise), first, euler, sigmas[3:], disable_pbar=True, seed=3)
    result = sample_with(ours(comfy_host, wan, phantom, end=0.5), wan)
    # the split goes through the latent format's out/in scaling once more: float32 rounding of ~10-size values
    assert (result - expected).abs().max().item() < 5e-5


def test_bad_per_step_lists_are_refused_naming_the_input(comfy_host, wan, phantom):
    with pytest.raises(ValueError, match="cfg_steps item 2: 'x' is not a number"):
        ours(comfy_host, wan, phantom, cfg_steps="3, x")
    with pytest.raises(ValueError, match="image_end"):
        ours(comfy_host, wan, phantom, end=1.5)


def test_sample_phantom_guidance_is_the_reference_guider(pack_module, wan):
    """Sample's guidance = phantom builds the Reference Guider (one guider code), with constant scales."""
    import importlib

    sample_node = importlib.import_module(f"{pack_module.__name__}.nodes.sample_node")
    guider_module = importlib.import_module(f"{pack_module.__name__}.nodes.reference_guider")
    settings = sample_node.SamplerSettings(0, STEPS, TEXT_CFG, "euler", "simple", 1.0, IMAGE_CFG)
    guider = sample_node.GUIDERS["phantom"](wan, conditioning(1), conditioning(2), settings)
    assert type(guider) is guider_module.ReferenceGuider
    assert (guider.guidance.cfg.values, guider.guidance.image_cfg.values) == ((TEXT_CFG,), (IMAGE_CFG,))
    assert (guider.guidance.image_start, guider.guidance.image_end) == (0.0, 1.0)
