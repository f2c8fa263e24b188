"""Turn the optional node inputs (reference, TAB, ERAE) into one ReferencePatch on a MODEL clone."""

from __future__ import annotations

import dataclasses

import torch

from ..customvideox_core.reference import check_finite, prepare_reference
from ..customvideox_core.tab import TABSchedule
from .patch import apply_reference_patch
from .types import ERAESettings, ReferenceLatents


def fit_replacement_mask(reference: ReferenceLatents, mask: torch.Tensor) -> ReferenceLatents:
    """Fit ERAEMask's ``mask`` ``[1 or R, H, W]`` exactly as ReferenceEncode fitted the images."""
    height, width = reference.source_size
    if tuple(mask.shape[-2:]) != (height, width):
        raise ValueError(
            f"ERAEMask reference_mask is {mask.shape[-1]}x{mask.shape[-2]} but the reference image is "
            f"{width}x{height}: draw the mask on the same image (or resize it to that size)"
        )
    if mask.shape[0] not in (1, reference.count):
        raise ValueError(
            f"ERAEMask reference_mask has {mask.shape[0]} masks for {reference.count} reference images; "
            "give one mask, or one per image"
        )
    blank = torch.ones(reference.count, height, width, 3)
    out_h, out_w = reference.masks.shape[-2:]
    _, masks = prepare_reference(blank, mask, width=out_w, height=out_h, fit=reference.fit)
    return dataclasses.replace(reference, masks=masks)


def patch_model(
    model,
    reference: ReferenceLatents | None,
    tab: TABSchedule | None,
    erae: ERAESettings | None,
    uncond_sees_reference: bool,
    *,
    allow_host_reference: bool = False,
):
    """A clone of ``model`` that generates with ``reference``; defaults: parabolic TAB, no ERAE.

    ``reference=None`` (only with ``allow_host_reference``, i.e. Apply) biases the reference frames the
    conditioning carries instead; ERAEMask's ``reference_mask`` then masks those frames.
    """
    masks = None
    if reference is None:
        if not allow_host_reference:
            raise ValueError("connect a reference (CustomVideoX ReferenceEncode) to this node")
        if erae is not None and erae.reference_mask is not None:
            masks = erae.reference_mask
    else:
        check_finite(
            reference.latents,
            "the reference latents",
            "encode the reference again with a working VAE (CustomVideoX ReferenceEncode refuses such latents)",
        )
        check_finite(reference.masks, "the reference's subject mask", "give a mask with values in [0, 1]")
    if erae is not None and erae.reference_mask is not None:
        check_finite(erae.reference_mask, "ERAEMask's reference_mask", "give a mask with values in [0, 1]")
    if reference is not None and erae is not None and erae.reference_mask is not None:
        reference = fit_replacement_mask(reference, erae.reference_mask)
    return apply_reference_patch(
        model,
        reference,
        tab=tab if tab is not None else TABSchedule(),
        erae=erae.config if erae is not None else None,
        uncond_sees_reference=uncond_sees_reference,
        masks=masks,
    )
