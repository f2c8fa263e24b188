"""The pack's own socket types and the values that travel on them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from comfy_api.latest import io
from torch import Tensor

from ..customvideox_core.erae import ERAEConfig
from ..customvideox_core.reference import prepare_reference

ReferenceType = io.Custom("CVX_REFERENCE")
TABType = io.Custom("CVX_TAB")
ERAEType = io.Custom("CVX_ERAE")
TrainSettingsType = io.Custom("CVX_TRAIN_SETTINGS")


@dataclass(frozen=True, eq=False)
class ReferenceLatents:
    """Output of ReferenceEncode.

    - ``latents``: ``[1, C, R, h, w]`` raw VAE latents, one latent frame per reference image.
    - ``masks``: ``[R, H, W]`` subject masks in ``[0, 1]`` at the pixel size the images were fitted to.
    - ``source_size``: ``(height, width)`` of the images before fitting; ``fit``: how they were fitted
      (a replacement mask from ERAEMask is fitted the same way).
    """

    latents: Tensor
    masks: Tensor
    source_size: tuple[int, int]
    fit: str

    @property
    def count(self) -> int:
        return self.latents.shape[2]


@dataclass(frozen=True, eq=False)
class ERAESettings:
    """Output of ERAEMask: the core config plus an optional mask that replaces the reference's."""

    config: ERAEConfig
    reference_mask: Tensor | None = None


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
