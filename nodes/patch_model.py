"""Turn the optional node inputs (reference, TAB, ERAE) into one ReferencePatch on a MODEL clone."""

from __future__ import annotations

from ..customvideox_core.host_specs import PREFIX_FRAMES_INPUT
from ..customvideox_core.reference import check_finite
from ..customvideox_core.tab import TABSchedule
from .cached_layout import apply_cached_layout, cached_adapter_of
from .patch import apply_reference_patch
from .types import ERAESettings, ReferenceLatents, fit_replacement_mask


def patch_model(
    model,
    reference: ReferenceLatents | None,
    tab: TABSchedule | None,
    erae: ERAESettings | None,
    uncond_sees_reference: bool,
    *,
    allow_host_reference: bool = False,
    prefix_frames: int = 0,
):
    """A clone of ``model`` that generates with ``reference``; defaults: parabolic TAB, no ERAE.

    A model that carries a cached-layout adapter (Load CustomVideoX) gets that adapter's reference branch
    (``nodes/cached_layout.py``); any other gets the joint layout's reference frames.

    ``reference=None`` (only with ``allow_host_reference``, i.e. Apply) biases the reference frames the
    conditioning carries instead (``prefix_frames`` of them in front of the video on VACE); ERAEMask's
    ``reference_mask`` then masks those frames.
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
    tab = tab if tab is not None else TABSchedule()
    cached = cached_adapter_of(model)
    if cached is not None:
        if prefix_frames:
            raise ValueError(
                f"{PREFIX_FRAMES_INPUT} is {prefix_frames}, but this model carries a cached-layout adapter "
                "(Load CustomVideoX), whose reference branch runs on the plain Wan T2V model only; set it "
                "to 0, or load the adapter on another model"
            )
        return apply_cached_layout(
            model, cached, reference, tab=tab, erae=erae, uncond_sees_reference=uncond_sees_reference
        )
    if reference is not None and erae is not None and erae.reference_mask is not None:
        reference = fit_replacement_mask(reference, erae.reference_mask)
    return apply_reference_patch(
        model,
        reference,
        tab=tab,
        erae=erae.config if erae is not None else None,
        uncond_sees_reference=uncond_sees_reference,
        masks=masks,
        prefix_frames=prefix_frames,
    )
