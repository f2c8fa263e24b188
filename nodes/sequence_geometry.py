"""Where the reference frames sit in one model call's sequence: the frame geometry of the reference wrapper.

The DiT pads the video latent ``[B, C, T, H, W]`` to its patches and runs its self-attention over one
token per patch. :class:`SequenceGeometry` builds, the same way, the :class:`TokenLayout` of that sequence
for each kind of reference frames (docs/ARCHITECTURE.md, "One road, a table of sources"):

- the pack's own frames, appended after the video (:meth:`SequenceGeometry.join`: each frame repeated to
  fill a temporal patch, CogVideoX 1.5);
- frames the host appends itself (Phantom's ``time_dim_concat``, :meth:`SequenceGeometry.host_layout`);
- frames a core node put in front of the video (VACE's reference, :meth:`SequenceGeometry.prefix_layout`);

and pools subject masks to the reference tokens (:meth:`SequenceGeometry.weights`). What differs by family
comes from the host's spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.ldm.common_dit
import torch
from torch import Tensor

from ..customvideox_core.erae import reference_token_weights
from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.host_specs import PREFIX_FRAMES_INPUT, HostSpec
from ..customvideox_core.layout import TokenLayout
from ..customvideox_core.reference import check_pixel_size


@dataclass(frozen=True)
class SequenceGeometry:
    """The frame geometry of one host (its signature: patch sizes, family spec)."""

    host: HostSignature

    @property
    def spec(self) -> HostSpec:
        return self.host.spec

    @property
    def patch_sizes(self) -> tuple[int, int]:
        """``(temporal, spatial)`` patch sizes of the host (its signature's)."""
        return self.host.patch_size_t or 1, self.host.patch_size

    def weights(self, x: Tensor, layout: TokenLayout, masks: Tensor | None) -> Tensor:
        """Region weights ``[1, reference]`` of the reference tokens (all ones without a mask)."""
        if masks is None:
            return torch.ones(1, layout.reference, device=x.device)
        frames = layout.reference_frames
        if masks.shape[0] not in (1, frames):
            raise ValueError(
                f"{masks.shape[0]} subject masks for {frames} reference frames: give one mask, or one per "
                "reference image"
            )
        weights = reference_token_weights(
            masks.to(x.device).expand(frames, -1, -1),
            latent_size=(x.shape[-2], x.shape[-1]),
            patch_size=self.host.patch_size,
        ).reshape(1, -1)
        if weights.shape[1] != layout.reference:
            raise ValueError(
                f"reference mask pooled to {weights.shape[1]} tokens, expected {layout.reference}"
            )
        return weights

    def join(self, dit, x: Tensor, context: Tensor, latents: Tensor) -> tuple[Tensor, Tensor, TokenLayout]:
        """Pad the video as the DiT would and build the reference frames. x ``[B, C, T, H, W]``, latents
        ``[1, C, R, h, w]`` (every Apply's own reference frames)."""
        reference = latents.to(device=x.device, dtype=x.dtype)
        if reference.shape[1] != x.shape[1] or reference.shape[-2:] != x.shape[-2:]:
            check_pixel_size(x.shape[-1] * 8, x.shape[-2] * 8, what="the video latent's width and height")
            raise ValueError(
                f"the reference latent is {tuple(reference.shape[1:2]) + tuple(reference.shape[-2:])} "
                f"(channels, height, width) but the video latent is "
                f"{tuple(x.shape[1:2]) + tuple(x.shape[-2:])}: encode the reference with the same VAE at "
                f"the video's size ({x.shape[-1] * 8}x{x.shape[-2] * 8} pixels)"
            )
        temporal, spatial = self.patch_sizes
        video = comfy.ldm.common_dit.pad_to_patch_size(x, (temporal, spatial, spatial))
        reference = comfy.ldm.common_dit.pad_to_patch_size(reference, (1, spatial, spatial))
        reference = reference.repeat_interleave(temporal, dim=2).expand(x.shape[0], -1, -1, -1, -1)
        layout = self.layout(context, video, reference)
        if self.spec.check_reference_fits is not None:
            self.spec.check_reference_fits(dit, layout.video + layout.reference)
        return video, reference, layout

    def host_layout(self, x: Tensor, context: Tensor, host_frames: Tensor) -> TokenLayout:
        """The layout the host builds itself when it appends ``host_frames`` after the (padded) video."""
        frames, frame_tokens = self.patch_grid(x)
        reference_frames, _ = self.patch_grid(host_frames)
        return self.spec.make_layout(context.shape[1], frames, reference_frames, frame_tokens)

    def prefix_layout(self, x: Tensor, prefix_frames: int) -> TokenLayout:
        """``[reference | video]``: the first ``prefix_frames`` latent frames of ``x`` ``[B, C, T, H, W]`` are
        the reference a prefix route put in front of the video (the DiT pads ``x`` to its patches)."""
        temporal, _ = self.patch_sizes
        frames, frame_tokens = self.patch_grid(x)
        if prefix_frames % temporal or prefix_frames >= frames * temporal:
            raise ValueError(
                f"{PREFIX_FRAMES_INPUT} is {prefix_frames}, but the latent being sampled has {x.shape[2]} "
                f"frames: it must count the reference frames in front of the video (WanVaceToVideo's "
                "trim_latent for this latent), fewer than the latent's frames"
            )
        return TokenLayout(
            text=0,
            video=(frames - prefix_frames // temporal) * frame_tokens,
            reference=prefix_frames // temporal * frame_tokens,
            frame_tokens=frame_tokens,
            reference_first=True,
        )

    def layout(self, context: Tensor, video: Tensor, reference: Tensor) -> TokenLayout:
        """Layout of ``[video | reference]`` frames, both ``[B, C, T, H, W]``."""
        frames, frame_tokens = self.patch_grid(video)
        reference_frames, _ = self.patch_grid(reference)
        return self.spec.make_layout(context.shape[1], frames, reference_frames, frame_tokens)

    def patch_grid(self, latent: Tensor) -> tuple[int, int]:
        """``(temporal patches, tokens per frame)`` of ``latent`` ``[B, C, T, H, W]`` once the DiT pads it to
        its patches (``comfy.ldm.common_dit.pad_to_patch_size``), read from its shape: nothing is copied."""
        temporal, spatial = self.patch_sizes
        frames, height, width = (
            -(-size // patch)
            for size, patch in zip(latent.shape[-3:], (temporal, spatial, spatial), strict=True)
        )
        return frames, height * width
