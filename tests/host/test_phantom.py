"""Phantom-Wan through the pack, judged against core's own Phantom path (the oracle).

Core runs Phantom with ``WanPhantomSubjectToVideo`` (the encoded subject images on the positive as
``time_dim_concat``, which ``comfy/ldm/wan/model.py`` appends after the video) and, for Phantom's
three-pass guidance, ``DualCFGGuider``. With the bias at 0 the pack must give exactly that result, in
both of its ways to run Phantom weights:

- its own reference (ReferenceEncode → Apply / Sample), appended by its wrapper in the same layout;
- composed with core's node: Apply with no reference biases the frames the conditioning carries.

A tiny random-weight Wan 2.1 model (Phantom-Wan is a Wan 2.1 T2V checkpoint with stock keys).
"""

from __future__ import annotations

import pytest
import torch
from nodes_support import (
    LATENT_SHAPE,
    VIDEO_FRAMES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Pack,
    conditioning,
    guided_sample,
    load_model,
    reference_images,
)

ATOL = 5e-4
"""float32 sampling of ~unit latents: the same attention weights, summed in another order."""
TEXT_CFG, IMAGE_CFG = 3.0, 2.0


@pytest.fixture(scope="module")
def wan(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.wan)


@pytest.fixture(scope="module")
def cogvideox(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])


def phantom_conds(comfy_host, vae, count: int) -> dict:
    """Core's WanPhantomSubjectToVideo on ``count`` subject images (already at the video's size)."""
    node = comfy_host.node_class("WanPhantomSubjectToVideo")
    positive, negative_text, negative_img_text, latent = node.execute(
        conditioning(1),
        conditioning(2),
        vae,
        VIDEO_WIDTH,
        VIDEO_HEIGHT,
        VIDEO_FRAMES,
        1,
        reference_images(count),
    ).args
    assert tuple(latent["samples"].shape) == LATENT_SHAPE
    return {
        "positive": positive,
        "negative_text": negative_text,
        "negative_img_text": negative_img_text,
        "negative": conditioning(2),
    }


def encode_reference(comfy_host, vae, count: int):
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return node.execute(vae, reference_images(count), VIDEO_WIDTH, VIDEO_HEIGHT, "crop", False, None).args[0]


def tab(pack: Pack, peak: float):
    return pack.tab.TABSchedule(shape="constant", peak=peak)


def ksample(model, positive, negative, *, seed: int = 3, cfg: float = 2.0) -> torch.Tensor:
    import comfy.sample

    latent = torch.zeros(LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        model, noise, 2, cfg, "euler", "simple", positive, negative, latent, disable_pbar=True, seed=seed
    )


def dual_sample(model, positive, middle, negative, *, seed: int = 3) -> torch.Tensor:
    """Core's DualCFGGuider (style regular): neg + IMAGE_CFG·(middle − neg) + TEXT_CFG·(pos − middle)."""
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    guider = Guider_DualCFG(model)
    guider.set_conds(positive, middle, negative)
    guider.set_cfg(TEXT_CFG, IMAGE_CFG)
    return guided_sample(guider, model, 2, seed=seed)


def apply(comfy_host, model, reference, schedule, erae=None):
    node = comfy_host.node_class("CustomVideoXApply")
    return node.execute(model, reference, False, tab=schedule, erae=erae).args[0]


def assert_close(ours: torch.Tensor, oracle: torch.Tensor) -> None:
    assert ours.shape == oracle.shape
    assert torch.allclose(ours, oracle, atol=ATOL, rtol=0), f"max diff {(ours - oracle).abs().max():.3g}"


@pytest.mark.parametrize("count", [1, 2, 4])
def test_own_reference_with_tab_0_is_cores_phantom_path(comfy_host, pack, vae, wan, count):
    """ReferenceEncode → Apply (TAB 0) + KSampler = core's Phantom positive + a plain negative."""
    conds = phantom_conds(comfy_host, vae, count)
    oracle = ksample(wan, conds["positive"], conds["negative"])
    ours = ksample(
        apply(comfy_host, wan, encode_reference(comfy_host, vae, count), tab(pack, 0.0)),
        conditioning(1),
        conditioning(2),
    )
    assert_close(ours, oracle)


@pytest.mark.parametrize("count", [1, 2])
def test_apply_without_reference_biases_cores_phantom_frames(comfy_host, pack, vae, wan, count):
    """Core's node + Apply with no reference: TAB 0 is core's result, TAB 2 moves it."""
    conds = phantom_conds(comfy_host, vae, count)
    oracle = ksample(wan, conds["positive"], conds["negative"])
    at_zero = ksample(apply(comfy_host, wan, None, tab(pack, 0.0)), conds["positive"], conds["negative"])
    assert_close(at_zero, oracle)
    at_two = ksample(apply(comfy_host, wan, None, tab(pack, 2.0)), conds["positive"], conds["negative"])
    assert float((at_two - oracle).abs().max()) > 100 * ATOL


def test_phantoms_all_zero_reference_is_not_biased(comfy_host, pack, vae, wan):
    """negative_img_text carries all-zero frames (Phantom's "no image"): TAB leaves that pass as core runs
    it, while the same TAB moves a pass that carries the subject's frames."""
    conds = phantom_conds(comfy_host, vae, 1)
    zero_reference = conds["negative_img_text"]
    oracle = ksample(wan, zero_reference, conds["negative"])
    at_two = ksample(apply(comfy_host, wan, None, tab(pack, 2.0)), zero_reference, conds["negative"])
    assert_close(at_two, oracle)


def test_tab_moves_the_own_reference_path(comfy_host, pack, vae, wan):
    reference = encode_reference(comfy_host, vae, 1)
    outputs = [
        ksample(apply(comfy_host, wan, reference, tab(pack, peak)), conditioning(1), conditioning(2))
        for peak in (0.0, 2.0)
    ]
    assert float((outputs[1] - outputs[0]).abs().max()) > 100 * ATOL


def test_sample_phantom_guidance_is_three_pass_guidance_of_core(comfy_host, pack, vae, wan):
    """Sample(guidance=phantom, TAB 0) = core DualCFGGuider over core's Phantom conditionings with the
    negative pass run without the reference (neg + g_img·(pos_img − neg) + g_text·(pos_img_text − pos_img))."""
    conds = phantom_conds(comfy_host, vae, 2)
    oracle = dual_sample(wan, conds["positive"], conds["negative_text"], conds["negative"])
    node = comfy_host.node_class("CustomVideoXSample")
    latent = {"samples": torch.zeros(LATENT_SHAPE)}
    ours = node.execute(
        wan,
        conditioning(1),
        conditioning(2),
        encode_reference(comfy_host, vae, 2),
        VIDEO_WIDTH,
        VIDEO_HEIGHT,
        VIDEO_FRAMES,
        3,
        2,
        TEXT_CFG,
        "euler",
        "simple",
        1.0,
        False,
        tab=tab(pack, 0.0),
        latent=latent,
        guidance="phantom",
        image_cfg=IMAGE_CFG,
    ).args[0]["samples"]
    assert_close(ours, oracle)


def test_dual_cfg_guider_through_apply_decides_per_conditioning(comfy_host, pack, vae, wan):
    """Core's DualCFGGuider evaluates [negative, middle, positive]: who sees the reference comes from each
    conditioning (Reference Conditioning marks the middle one), not from the batch chunk's index."""
    conds = phantom_conds(comfy_host, vae, 1)
    oracle = dual_sample(wan, conds["positive"], conds["negative_text"], conds["negative"])
    mark = comfy_host.node_class("CustomVideoXReferenceConditioning")
    middle = mark.execute(conditioning(2), True).args[0]
    patched = apply(comfy_host, wan, encode_reference(comfy_host, vae, 1), tab(pack, 0.0))
    assert_close(dual_sample(patched, conditioning(1), middle, conditioning(2)), oracle)


def test_dual_cfg_guider_over_cores_phantom_outputs_with_apply(comfy_host, pack, vae, wan):
    """Core's three Phantom outputs in DualCFGGuider, Apply without reference at TAB 0: core's result."""
    conds = phantom_conds(comfy_host, vae, 1)
    three = (conds["positive"], conds["negative_text"], conds["negative_img_text"])
    oracle = dual_sample(wan, *three)
    assert_close(dual_sample(apply(comfy_host, wan, None, tab(pack, 0.0)), *three), oracle)


def test_a_reference_on_both_sides_is_refused(comfy_host, pack, vae, wan):
    conds = phantom_conds(comfy_host, vae, 1)
    patched = apply(comfy_host, wan, encode_reference(comfy_host, vae, 1), tab(pack, 1.0))
    with pytest.raises(ValueError, match="already carries 1 reference frame.*use one of them"):
        ksample(patched, conds["positive"], conds["negative"])


def test_apply_without_reference_needs_reference_frames_on_the_positive(comfy_host, pack, wan):
    patched = apply(comfy_host, wan, None, tab(pack, 1.0))
    with pytest.raises(ValueError, match="no reference connected.*WanPhantomSubjectToVideo"):
        ksample(patched, conditioning(1), conditioning(2))


def test_apply_without_reference_is_refused_on_a_host_without_a_reference_input(comfy_host, pack, cogvideox):
    with pytest.raises(ValueError, match="connect a reference.*no reference input of its own"):
        apply(comfy_host, cogvideox, None, tab(pack, 1.0))
