"""The pack's own socket types and the values that travel on them."""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io
from torch import Tensor

from ..customvideox_core.erae import ERAEConfig

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
