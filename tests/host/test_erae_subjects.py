"""Several subjects in a real ComfyUI: words bound to reference image k raise the bias toward image k only.

A tiny random-weight CogVideoX (joint attention: the entity activation is measured in the same call)
with two reference images. An earlier attention override in the chain records the first biased
self-attention call of the step: ours then calls it as the backend with the augmented query and key,
so ``q'·k'ᵀ/√D'`` are the logits the backend really computes. The first layer sees the same hidden
states whatever the ERAE strength, so the difference of its logits between strength γ and 0 is the
ERAE term ``b(s)·γ·a_i·m_j`` alone: non-zero on the bound image's keys, exactly zero on the other's.
"""

from __future__ import annotations

import math

import pytest
import torch
from nodes_support import (
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Pack,
    constant_tab_patch,
    load_model,
    load_vae,
    reference_images,
    sample,
)


@pytest.fixture(scope="module")
def model(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])


@pytest.fixture(scope="module")
def reference(comfy_host, tiny_models):
    vae = load_vae(tiny_models.vae_dir, tiny_models.vae)
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return node.execute(vae, reference_images(2), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]


class FirstBiasedLogits:
    """Earlier override in the chain: keeps the logits of the first biased self-attention call."""

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None
        self.layout = None

    def __call__(self, func, *args, **kwargs):
        runtime = (kwargs.get("transformer_options") or {}).get("cvx_runtime")
        if kwargs.get("skip_reshape") and runtime is not None and self.logits is None:
            query, key = args[0].double(), args[1].double()
            if query.shape[-1] != key.shape[-1] or key.shape[2] != runtime.layout.total:
                return func(*args, **kwargs)
            self.layout = runtime.layout
            self.logits = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        return func(*args, **kwargs)


def first_logits(pack: Pack, model, reference, erae) -> tuple[torch.Tensor, object]:
    patched = constant_tab_patch(pack, model, reference, 1.0, erae=erae)
    probe = FirstBiasedLogits()
    patched.model_options["transformer_options"]["optimized_attention_override"] = probe
    sample(patched, steps=1, cfg=1.0)
    assert probe.logits is not None, "the backend never ran a biased self-attention"
    return probe.logits, probe.layout


@pytest.mark.parametrize("bound_image", [0, 1])
def test_subject_words_raise_the_bias_toward_their_own_image_only(pack, model, reference, bound_image):
    erae = pack.erae
    words = (erae.SubjectWords(bound_image, (1, 2)),)
    base, layout = first_logits(pack, model, reference, erae.ERAEConfig(gamma=0.0, subjects=words))
    raised, _ = first_logits(pack, model, reference, erae.ERAEConfig(gamma=4.0, subjects=words))
    frame = layout.frame_tokens
    start = layout.text + layout.video
    difference = (raised - base)[..., layout.video_slice, :]  # video queries
    bound = difference[..., start + bound_image * frame : start + (bound_image + 1) * frame]
    other_image = 1 - bound_image
    other = difference[..., start + other_image * frame : start + (other_image + 1) * frame]
    rest = difference[..., :start]
    assert float(bound.max()) > 0.5, "the bound image's keys got no ERAE term"
    assert float(bound.min()) >= -1e-4, "the ERAE term b(s)·γ·a_i·m_j is never negative for γ > 0"
    assert float(other.abs().max()) < 1e-4, "the other image's keys must keep their bias"
    assert float(rest.abs().max()) < 1e-4, "text and video keys carry no bias"


def test_one_unbound_group_equals_the_single_subject_config(pack, model, reference):
    """entity_positions alone (no subjects) is the old one-subject ERAE: both images raised alike."""
    erae = pack.erae
    base, layout = first_logits(pack, model, reference, erae.ERAEConfig(entity_positions=(1, 2), gamma=0.0))
    raised, _ = first_logits(pack, model, reference, erae.ERAEConfig(entity_positions=(1, 2), gamma=4.0))
    start, frame = layout.text + layout.video, layout.frame_tokens
    difference = (raised - base)[..., layout.video_slice, :]
    first = difference[..., start : start + frame]
    second = difference[..., start + frame : start + 2 * frame]
    assert float(first.max()) > 0.5
    torch.testing.assert_close(first, second, atol=1e-4, rtol=0)  # same m_j (all-ones masks), same a_i


def tokenizer_clip(comfy_host):
    return comfy_host.node_class("CVXTestTokenizerCLIP").execute("cogvideox").args[0]


def test_erae_mask_node_binds_words_to_images(comfy_host, pack):
    """'N: words' lines (or ';' items) become subjects at the words' own token positions."""
    clip = tokenizer_clip(comfy_host)
    node = comfy_host.node_class("CustomVideoXERAEMask")
    prompt = "a dog and a cat play in the park"
    single = node.execute(clip, prompt, "dog", 1.0, 0.0, False).args[0].config
    cat = node.execute(clip, prompt, "cat", 1.0, 0.0, False).args[0].config
    both = node.execute(clip, prompt, "", 2.0, 0.0, False, None, "1: dog\n2: cat").args[0].config
    assert both.entity_positions == ()
    assert [(s.reference_frame, s.entity_positions) for s in both.subjects] == [
        (0, single.entity_positions),
        (1, cat.entity_positions),
    ]
    same = node.execute(clip, prompt, "", 2.0, 0.0, False, None, "1: dog; 2: cat").args[0].config
    assert same.subjects == both.subjects
    assert node.execute(clip, prompt, "dog", 1.0, 0.0, False, None, "").args[0].config == single


@pytest.mark.parametrize(
    ("subject_words", "message"),
    [
        ("dog", r"must read 'N: words'"),
        ("0: dog", r"must read 'N: words'"),
        ("1:", "names reference image 1 but no words"),
        ("1: dog; 1: cat", "reference image 1 twice"),
    ],
)
def test_erae_mask_node_refuses_bad_subject_lines(comfy_host, subject_words, message):
    node = comfy_host.node_class("CustomVideoXERAEMask")
    with pytest.raises(ValueError, match=message):
        node.execute(tokenizer_clip(comfy_host), "a dog and a cat", "", 1.0, 0.0, False, None, subject_words)
