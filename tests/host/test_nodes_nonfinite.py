"""NaN in, clear error out: non-finite VAE latents, reference latents and masks are refused by name.

The broken VAE is the tiny VAE's own object with its ``encode`` wrapped (ComfyUI's code is untouched):
it returns what the real encode returns with NaN or inf written into it, as broken weights or an fp16
overflow would. The oracle is the error text: it must name the VAE's class and dtype, or the input.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from nodes_support import (
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Pack,
    conditioning,
    load_model,
    load_vae,
    reference_images,
)


@pytest.fixture(scope="module")
def pack(pack_module) -> Pack:
    return Pack.of(pack_module)


@pytest.fixture(scope="module")
def vae(tiny_models):
    return load_vae(tiny_models.vae_dir, tiny_models.vae)


@pytest.fixture(scope="module")
def model(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])


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


def encode(comfy_host, vae, mask=None):
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return node.execute(vae, reference_images(1), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, mask).args[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_reference_encode_refuses_non_finite_vae_latents_naming_the_vae(comfy_host, vae, value):
    encode(comfy_host, vae)  # the same VAE without the fault encodes fine
    with pytest.raises(ValueError) as caught:
        encode(comfy_host, broken_vae(vae, value))
    message = str(caught.value)
    assert type(vae.first_stage_model).__name__ in message
    assert str(vae.vae_dtype) in message
    assert ("1 NaN" if value != value else "1 infinite") in message
    assert "fp32-vae" in message


def test_reference_encode_refuses_a_nan_mask(comfy_host, vae):
    mask = torch.ones(1, VIDEO_HEIGHT, VIDEO_WIDTH)
    mask[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encode(comfy_host, vae, mask)


@pytest.mark.parametrize("node_id", ["CustomVideoXApply", "CustomVideoXSample"])
def test_apply_and_sample_refuse_non_finite_reference_latents_and_masks(
    comfy_host, pack, vae, model, node_id
):
    good = encode(comfy_host, vae)
    latents = good.latents.clone()
    latents[0, 0, 0, 0, 0] = float("nan")
    masks = good.masks.clone()
    masks[0, 0, 0] = float("inf")
    cases = {
        "the reference latents": dataclasses.replace(good, latents=latents),
        "subject mask": dataclasses.replace(good, masks=masks),
    }
    node = comfy_host.node_class(node_id)

    def run(reference):
        if node_id == "CustomVideoXApply":
            return node.execute(model, reference, False)
        return node.execute(
            model,
            conditioning(1),
            conditioning(2),
            reference,
            VIDEO_WIDTH,
            VIDEO_HEIGHT,
            5,
            0,
            1,
            2.0,
            "euler",
            "simple",
            1.0,
            False,
        )

    assert run(good).args[0] is not None  # the finite reference is accepted
    for expected, reference in cases.items():
        with pytest.raises(ValueError, match=expected):
            run(reference)


def test_apply_refuses_a_non_finite_erae_mask(comfy_host, pack, vae, model):
    good = encode(comfy_host, vae)
    mask = torch.ones(1, *good.source_size)
    mask[0, 1, 1] = float("nan")
    erae = pack.types.ERAESettings(config=pack.erae.ERAEConfig(), reference_mask=mask)
    with pytest.raises(ValueError, match="ERAEMask's reference_mask"):
        comfy_host.node_class("CustomVideoXApply").execute(model, good, False, erae=erae)
