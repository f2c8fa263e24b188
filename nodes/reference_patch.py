"""What one Apply node stores on its model: the :class:`ReferencePatch`, and how Apply nodes stack.

Two Apply nodes with a reference each add up (:func:`chain_patches`): the later patch keeps the earlier
ones' references before its own, each its own source with its own TAB, ERAE, masks and negative pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..customvideox_core.erae import ERAEConfig
from ..customvideox_core.tab import TABSchedule


@dataclass(frozen=True, eq=False)
class ReferencePatch:
    """Everything one patched MODEL needs.

    - ``model_latents``: ``[1, C, R, h, w]`` the patch's own reference (ReferenceEncode) in the model's
      latent space, or ``None`` to bias the reference frames the conditioning already carries (the
      host's reference input, e.g. Phantom's).
    - ``masks``: ``[1 or R, H, W]`` subject masks of the reference frames — the own reference's, or the
      host's frames' (compose mode) — or ``None`` for the whole frame.
    """

    model_latents: Tensor | None
    tab: TABSchedule
    erae: ERAEConfig | None
    uncond_sees_reference: bool
    masks: Tensor | None = None
    prefix_frames: int = 0
    """Reference frames the conditioning puts in front of the video (a prefix route: VACE's
    ``trim_latent``), biased when ``model_latents`` is None; 0 elsewhere."""
    earlier: tuple[ReferencePatch, ...] = ()
    """The references of Apply nodes earlier in the graph (their frames come first, each its own source
    with its own TAB, ERAE, masks and negative pass); see :func:`chain_patches`."""

    @property
    def sources(self) -> tuple[ReferencePatch, ...]:
        """One patch per Apply node, in the order of their frames (each without ``earlier``)."""
        return (*self.earlier, replace(self, earlier=()))

    @property
    def reference_frames(self) -> int:
        """Latent frames of the pack's own references (every Apply's), appended after the video."""
        return sum(
            int(patch.model_latents.shape[2]) for patch in self.sources if patch.model_latents is not None
        )

    def all_latents(self) -> Tensor:
        """``[1, C, R, h, w]``: the own reference frames of every Apply, in order."""
        return torch.cat([patch.model_latents for patch in self.sources], dim=2)


def chain_patches(first: ReferencePatch | None, second: ReferencePatch) -> ReferencePatch:
    """``second`` (a later Apply node's patch) with the references of ``first`` kept before it.

    Two Apply nodes with a reference each add up: the frames of both, each with its own bias. An Apply
    without a reference (it biases the frames the conditioning carries) cannot share a model with
    another Apply: the second one refuses, naming both.
    """
    if first is None:
        return second
    if first.model_latents is None or second.model_latents is None:
        kinds = [
            "one biasing the reference frames of the conditioning (no reference connected)"
            if patch.model_latents is None
            else "one with its own reference"
            for patch in (first, second)
        ]
        raise ValueError(
            f"this model already went through a CustomVideoX Apply ({kinds[0]}); a second Apply "
            f"({kinds[1]}) cannot add to it: the conditioning's frames and the pack's own appended frames "
            "are two layouts of one reference. Use one Apply: connect every reference image to one "
            "ReferenceEncode, or none to bias the conditioning's frames."
        )
    reference = first.model_latents
    latents = second.model_latents
    if reference.shape[1] != latents.shape[1] or reference.shape[-2:] != latents.shape[-2:]:
        raise ValueError(
            f"the reference of this Apply is {tuple(latents.shape[1:2]) + tuple(latents.shape[-2:])} "
            f"(channels, height, width) but an earlier Apply's is "
            f"{tuple(reference.shape[1:2]) + tuple(reference.shape[-2:])}: encode both references at the "
            "video's size with the same VAE"
        )
    return replace(second, earlier=first.sources)
