"""Motion: how far the picture moves between scored frames, by block matching (no optical-flow model).

Definition (``docs/METRICS.md``):

1. each scored frame becomes luma ``Y = 0.299 R + 0.587 G + 0.114 B``, resized (area-averaged) so its
   short side is ``size`` pixels (128);
2. the earlier frame of each pair ``k, k+1`` is cut into ``block × block`` blocks (8×8; a remainder at the
   right/bottom is not scored); each block's displacement ``d = (dx, dy)``, ``|dx|, |dy| <= radius`` (8),
   is the one whose block in the later frame has the least mean absolute luma difference (displacements
   leaving the frame are not tried; ties go to the shortest, so a flat block does not move);
3. a pair's **motion** is the mean block displacement length ``|d|`` in percent of the short side; the
   **subject motion** is the same mean over the blocks whose area is mostly (> 0.5) inside the earlier
   frame's subject mask;
4. the video's motion is the mean over pairs (``None`` for a single frame).

What it measures: the apparent displacement of textured content, camera motion included (a pan moves
every block). What it misses: motion faster than ``radius`` pixels per pair at the working size (it is
clipped to at most ``radius``, 6.25 % of the short side per pair at the defaults), motion of flat
regions, and a change of brightness without displacement (mostly ignored, by design). A still video
scores exactly 0. With a frame stride ``s`` the pairs are ``s`` frames apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .averages import mean_or_none
from .regions import check_images, masks_for
from .sampling import frame_indices

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class MotionOptions:
    """Working short side ``size``, ``block`` side and search ``radius``, in working pixels."""

    size: int = 128
    block: int = 8
    radius: int = 8

    def __post_init__(self) -> None:
        if self.block < 2 or self.size < 2 * self.block:
            raise ValueError(
                f"motion needs block >= 2 and size >= 2·block; got {self.block} and {self.size}."
            )
        if self.radius < 1:
            raise ValueError(f"motion search radius is {self.radius}; it must be >= 1.")


def working_luma(frames: Tensor, size: int) -> Tensor:
    """``[N, H, W, C]`` in ``[0, 1]`` → luma ``[N, h, w]`` float32 with ``min(h, w) == size``
    (unchanged when the short side already is ``size``)."""
    weights = torch.tensor(LUMA, dtype=torch.float64)
    luma = (frames[..., :3].to(torch.float32) * weights.to(torch.float32)).sum(dim=-1)
    height, width = luma.shape[1:]
    if min(height, width) == size:
        return luma
    scale = size / min(height, width)
    target = (max(round(height * scale), size), max(round(width * scale), size))
    return F.interpolate(luma[:, None], size=target, mode="area")[:, 0]


def block_displacements(earlier: Tensor, later: Tensor, block: int, radius: int) -> Tensor:
    """``[h, w]`` luma pair → ``[h // block, w // block, 2]`` displacement ``(dx, dy)`` of each block."""
    height, width = (earlier.shape[0] // block) * block, (earlier.shape[1] // block) * block
    earlier = earlier[:height, :width]
    padded = F.pad(later[None, None], (radius, radius, radius, radius), value=math.nan)[0, 0]
    side = 2 * radius + 1
    # windows[i, j] is the later frame moved by (dx, dy) = (j − radius, i − radius): [side, side, h, w]
    windows = padded[: height + 2 * radius, : width + 2 * radius].unfold(0, height, 1).unfold(1, width, 1)
    difference = (windows - earlier).abs().reshape(side * side, 1, height, width)
    cost = torch.nan_to_num(F.avg_pool2d(difference, block)[:, 0], nan=math.inf)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    shifts = torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=-1)  # [side², 2] as (dx, dy)
    cost = cost + 1e-9 * (shifts**2).sum(dim=-1).to(cost.dtype)[:, None, None]  # ties: the shortest
    return shifts[cost.argmin(dim=0)]


@dataclass(frozen=True)
class MotionScores:
    """Per pair of consecutive scored frames: ``overall`` and ``subject`` (``None`` without a mask, or
    where no block is on the subject) motion, in percent of the short side."""

    frames: tuple[int, ...]
    overall: tuple[float, ...]
    subject: tuple[float | None, ...] | None

    @property
    def mean(self) -> float | None:
        return mean_or_none(self.overall)

    @property
    def subject_mean(self) -> float | None:
        found = [value for value in self.subject or () if value is not None]
        return mean_or_none(found)


def score_motion(
    frames: Tensor,
    *,
    masks: Tensor | None = None,
    stride: int = 1,
    options: MotionOptions = MotionOptions(),
) -> MotionScores:
    """Motion of ``frames`` ``[F, H, W, C]`` (see the module doc); ``masks`` ``[1 | F, H, W]`` (all frames,
    before striding) give the subject motion."""
    check_images(frames, "frames")
    indices = frame_indices(frames.shape[0], stride)
    if masks is not None and masks.ndim == 3 and masks.shape[0] == frames.shape[0]:
        masks = masks[list(indices)]
    return _score_motion(frames[list(indices)], indices, masks, options)


def _score_motion(
    scored: Tensor, indices: tuple[int, ...], masks: Tensor | None, options: MotionOptions
) -> MotionScores:
    """:func:`score_motion` of frames already checked and selected: ``scored`` ``[len(indices), H, W, C]``
    are the frames ``indices`` of the video, ``masks`` ``[1 | len(indices), H, W]`` their masks."""
    luma = working_luma(scored, options.size)
    block_weights = None
    if masks is not None:
        count, height, width = luma.shape
        resized = masks_for(masks, count, height, width, "the mask of frames").to(torch.float64)
        rows, cols = height // options.block, width // options.block
        cut = resized[:, : rows * options.block, : cols * options.block]
        block_weights = F.avg_pool2d(cut[:, None], options.block)[:, 0]
    overall, subject = [], []
    for pair in range(len(indices) - 1):
        shifts = block_displacements(luma[pair], luma[pair + 1], options.block, options.radius)
        lengths = shifts.norm(dim=-1) * (100.0 / options.size)
        overall.append(float(lengths.mean()))
        if block_weights is not None:
            on_subject = block_weights[pair] > 0.5
            subject.append(float(lengths[on_subject].mean()) if bool(on_subject.any()) else None)
    return MotionScores(
        frames=indices, overall=tuple(overall), subject=None if masks is None else tuple(subject)
    )
