"""VACE through the pack (issue #20): Apply with no reference biases VACE's reference prefix.

Core runs a VACE reference with ``WanVaceToVideo``: the encoded reference image stands in front of the
video, in the latent being sampled and in the control context VACE's blocks read, and the node's
``trim_latent`` output counts those frames for ``TrimVideoLatent`` after sampling. CustomVideoX Apply, with
no reference of its own and ``trim_latent`` wired to its ``reference_prefix_frames``, biases the video's
attention to those frames. The oracle is core's own VACE graph, the same graph without Apply: with the
bias at 0 the pack must give exactly that result, at TAB 2 it must move it, and ``TrimVideoLatent`` must
leave the video's frames in both. A tiny random-weight ``VaceWanModel`` file that ``UNETLoader`` detects as
VACE (``tests/host/tiny_models.write_tiny_wan_vace``), run through ComfyUI's executor.
"""

from __future__ import annotations

import pytest
import torch
from harness import GraphExecutionError
from nodes_support import (
    LATENT_SHAPE,
    VIDEO_FRAMES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    conditioning,
    constant_tab_node,
    ksampler_node,
    load_model,
    random_conditioning_node,
    reference_images,
)

STEPS = 3
VIDEO_SIZE = {"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "length": VIDEO_FRAMES, "batch_size": 1}
"""The video WanVaceToVideo makes: the tiny models' size, one at a time."""


def vace_graph(
    tiny_models,
    *,
    tab_peak: float | None,
    reference: bool = True,
    prefix: object = None,
    erae: float | None = None,
) -> dict:
    """UNETLoader (VACE) → [CustomVideoX Apply, no reference] → KSampler ← WanVaceToVideo; TrimVideoLatent.

    ``tab_peak`` None: core's graph alone (no Apply). ``prefix``: what Apply's ``reference_prefix_frames``
    gets; by default WanVaceToVideo's ``trim_latent`` wire. ``erae``: the strength of an ERAEMask on
    "dog" (a 32-token conditioning whose prompt holds the word early), or None for no ERAE.
    """
    graph = {
        "unet": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": tiny_models.wan_vace, "weight_dtype": "default"},
        },
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": tiny_models.vae}},
        "image": {
            "class_type": "EmptyImage",
            "inputs": {"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "batch_size": 1, "color": 0x3080C0},
        },
        "positive": random_conditioning_node(1, 6),
        "negative": random_conditioning_node(2, 6),
        "vace": {
            "class_type": "WanVaceToVideo",
            "inputs": {
                **VIDEO_SIZE,
                "positive": ["positive", 0],
                "negative": ["negative", 0],
                "vae": ["vae", 0],
                "strength": 1.0,
                **({"reference_image": ["image", 0]} if reference else {}),
            },
        },
        "sampler": ksampler_node(
            ["unet", 0], ["vace", 0], ["vace", 1], ["vace", 2], seed=7, steps=STEPS, cfg=2.0
        ),
        "summary": {"class_type": "CVXTestLatentSummary", "inputs": {"samples": ["trim", 0]}},
        "trim": {
            "class_type": "TrimVideoLatent",
            "inputs": {"samples": ["sampler", 0], "trim_amount": ["vace", 3]},
        },
    }
    if tab_peak is not None:
        graph["tab"] = constant_tab_node(tab_peak)
        graph["apply"] = {
            "class_type": "CustomVideoXApply",
            "inputs": {
                "model": ["unet", 0],
                "tab": ["tab", 0],
                "uncond_sees_reference": False,
                "reference_prefix_frames": ["vace", 3] if prefix is None else prefix,
            },
        }
        graph["sampler"]["inputs"]["model"] = ["apply", 0]
    if erae is not None:
        graph["clip"] = {"class_type": "CVXTestTokenizerCLIP", "inputs": {"family": "wan"}}
        graph["erae"] = {
            "class_type": "CustomVideoXERAEMask",
            "inputs": {
                "clip": ["clip", 0],
                "prompt": "a dog running on the grass",
                "entity_words": "dog",
                "strength": erae,
                "threshold": 0.0,
                "block_outside_mask": False,
            },
        }
        graph["apply"]["inputs"]["erae"] = ["erae", 0]
        for node in ("positive", "negative"):
            graph[node]["inputs"]["length"] = 32
    return graph


def run(comfy_host, graph) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sampled latent, trimmed latent, trim_latent) of one run."""
    result = comfy_host.run_graph(graph, capture=["sampler", "trim", "vace"])
    return (
        result.node_outputs["sampler"][0]["samples"],
        result.node_outputs["trim"][0]["samples"],
        result.node_outputs["vace"][3],
    )


@pytest.fixture(scope="module")
def core(comfy_host, tiny_models):
    """Core's VACE graph with a reference image, sampled without the pack: the oracle."""
    return run(comfy_host, vace_graph(tiny_models, tab_peak=None))


def test_core_puts_one_reference_frame_in_front_of_the_video(core):
    sampled, trimmed, trim_latent = core
    assert trim_latent == 1
    assert tuple(sampled.shape) == (1, 16, LATENT_SHAPE[2] + 1, *LATENT_SHAPE[3:])
    assert tuple(trimmed.shape) == LATENT_SHAPE


def test_apply_at_tab_zero_is_cores_vace_path_exactly(comfy_host, tiny_models, core):
    sampled, trimmed, trim_latent = run(comfy_host, vace_graph(tiny_models, tab_peak=0.0))
    assert trim_latent == 1
    assert torch.equal(sampled, core[0])
    assert torch.equal(trimmed, core[1])


def test_tab_two_moves_the_video_and_trim_latent_still_leaves_the_video(comfy_host, tiny_models, core):
    sampled, trimmed, _ = run(comfy_host, vace_graph(tiny_models, tab_peak=2.0))
    assert tuple(sampled.shape) == tuple(core[0].shape)
    assert tuple(trimmed.shape) == LATENT_SHAPE
    assert torch.isfinite(sampled).all()
    moved = (trimmed - core[1]).abs().max().item()
    scale = core[1].abs().max().item()
    assert moved > 1e-2 * scale, (moved, scale)


def test_the_bias_acts_on_the_video_queries_toward_the_prefix_only(
    comfy_host, tiny_models, pack, monkeypatch
):
    """Every model call plans one source: the ``trim_latent`` frames in front of the video, seen and biased
    by every row, in a ``[reference | video]`` layout of the whole latent (no frame appended)."""
    seen = []
    plan_source, plan_sources = pack.patch.plan_source, pack.patch.plan_sources

    def step_spy(name, layout, **kwargs):
        fields = (layout.text, layout.video, layout.reference, layout.frame_tokens, layout.reference_first)
        seen.append(("layout", fields, tuple(kwargs["row_sees_reference"])))
        return plan_source(name, layout, **kwargs)

    def sources_spy(sources, batch, device):
        seen.append(
            ("sources", [(source.name, source.tokens, source.cached, source.tab) for source in sources])
        )
        return plan_sources(sources, batch, device)

    monkeypatch.setattr(pack.patch, "plan_source", step_spy)
    monkeypatch.setattr(pack.patch, "plan_sources", sources_spy)
    run(comfy_host, vace_graph(tiny_models, tab_peak=2.0))
    frame_tokens = (LATENT_SHAPE[3] // 2) * (LATENT_SHAPE[4] // 2)
    layout = (0, LATENT_SHAPE[2] * frame_tokens, frame_tokens, frame_tokens, True)
    one_call = [
        ("layout", layout, (True, True)),
        ("sources", [("reference frames in front of the video", frame_tokens, False, (2.0, 2.0))]),
    ]
    assert seen == one_call * STEPS


def test_erae_reads_the_words_from_the_cross_attention_and_strengthens_the_prefix(comfy_host, tiny_models):
    """ERAE on VACE: the entity activation of each block's cross-attention scales the prefix's bias; at
    strength 0 it is TAB alone, and a strength moves the video further."""
    tab_alone = run(comfy_host, vace_graph(tiny_models, tab_peak=2.0, erae=0.0))[1]
    with_erae = run(comfy_host, vace_graph(tiny_models, tab_peak=2.0, erae=10.0))[1]
    assert torch.isfinite(with_erae).all()
    assert (with_erae - tab_alone).abs().max().item() > 1e-3


OWN_REFERENCE_REFUSED = r"VaceWanModel\) with a reference of its own: .*reference_image"


def test_apply_and_sample_with_their_own_reference_on_vace_are_refused_at_the_node(
    comfy_host, tiny_models, vae
):
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.wan_vace)
    encode = comfy_host.node_class("CustomVideoXReferenceEncode")
    images = reference_images(1)
    reference = encode.execute(vae, images, VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]
    apply = comfy_host.node_class("CustomVideoXApply")
    for frames in (0, 1):
        with pytest.raises(ValueError, match=OWN_REFERENCE_REFUSED):
            apply.execute(model, reference, reference_prefix_frames=frames)
    sample = comfy_host.node_class("CustomVideoXSample")  # it always has a reference of its own
    with pytest.raises(ValueError, match=OWN_REFERENCE_REFUSED):
        sample.execute(
            model, conditioning(1), conditioning(2), reference, VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FRAMES,
            seed=1, steps=1, cfg=2.0, sampler_name="euler", scheduler="simple", denoise=1.0,
            uncond_sees_reference=False,
        )  # fmt: skip


def test_vace_without_a_reference_image_is_refused_naming_trim_latent(comfy_host, tiny_models):
    """A control-video-only VACE graph has no reference in front of the video: trim_latent is 0."""
    graph = vace_graph(tiny_models, tab_peak=2.0, reference=False)
    with pytest.raises(
        GraphExecutionError, match=r"connect WanVaceToVideo's trim_latent to Apply's reference_prefix_frames"
    ):
        comfy_host.run_graph(graph)


def test_reference_prefix_frames_on_a_plain_wan_is_refused(comfy_host, tiny_models):
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.wan)
    apply = comfy_host.node_class("CustomVideoXApply")
    with pytest.raises(
        ValueError, match=r"reference_prefix_frames is 1, but this model \(WanModel\) puts no"
    ):
        apply.execute(model, None, reference_prefix_frames=1)


def test_a_prefix_longer_than_the_latent_is_refused_when_sampling(comfy_host, tiny_models):
    graph = vace_graph(tiny_models, tab_peak=2.0, prefix=LATENT_SHAPE[2] + 1)
    with pytest.raises(
        GraphExecutionError, match=r"reference_prefix_frames is 3, but the latent being sampled has 3"
    ):
        comfy_host.run_graph(graph)
