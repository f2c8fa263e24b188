"""Stand-In's reference positions and Wan's 3D RoPE, host-free.

Wan's RoPE splits each head of ``D`` dims into three axes (time, row, column) of
``(D - 4*(D//6), 2*(D//6), 2*(D//6))`` dims and rotates consecutive pairs ``(x[2k], x[2k+1])`` of each
axis by ``position * theta^(-2k/d_axis)`` (``theta = 10000``). ComfyUI (``rope_embedder`` + ``apply_rope1``)
and Stand-In (``precompute_freqs_cis_3d`` + ``rope_apply``, complex multiply) compute the same rotation.

Stand-In places its reference tokens (``models/wan_video_dit.py``, ``WanModel.forward`` and
``pipelines/wan_video.py``, ``model_fn_wan_video``): its frequency tables start at position ``-1``
(``torch.arange(-1, end)``), the video reads them from index ``offset = 1`` (positions ``0 …``) and the
reference reads time index 0 (position ``-1``), rows from index ``h + 1`` and columns from ``w + 1``, i.e.
positions ``h … h + h_ref - 1`` and ``w … w + w_ref - 1``: right past the video's last row and column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ROPE_THETA = 10000.0


@dataclass(frozen=True)
class ReferencePlacement:
    """Where the reference tokens sit in RoPE space, relative to a video of ``(f, h, w)`` tokens.

    - ``time``: the reference's temporal position; Stand-In uses ``-1`` (one frame before the video).
    - ``extra_offset``: added to the row/column start ``h``/``w``. Stand-In's published code is ``0``
      (rows ``h …``, columns ``w …``); kijai's wrapper exposes a ``freq_offset`` whose default differs by one.
    """

    time: float = -1.0
    extra_offset: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.extra_offset, bool) or not isinstance(self.extra_offset, int):
            raise ValueError(f"extra_offset must be an integer, got {self.extra_offset!r}.")


STANDIN_PLACEMENT = ReferencePlacement()


def axes_dims(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of one head into (time, row, column) rotary dims."""
    if head_dim < 6 or head_dim % 2:
        raise ValueError(f"head_dim must be an even number >= 6, got {head_dim}.")
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def video_positions(grid: tuple[int, int, int]) -> Tensor:
    """Positions ``[f*h*w, 3]`` (float64) of the video tokens, row-major ``(f, h, w)`` from 0."""
    frames, rows, cols = grid
    f, h, w = torch.meshgrid(
        torch.arange(frames, dtype=torch.float64),
        torch.arange(rows, dtype=torch.float64),
        torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([f, h, w], dim=-1).reshape(-1, 3)


def reference_positions(
    video_grid: tuple[int, int, int],
    reference_grid: tuple[int, int],
    placement: ReferencePlacement = STANDIN_PLACEMENT,
) -> Tensor:
    """Positions ``[h_ref*w_ref, 3]`` (float64) of the reference tokens, row-major like the patchify."""
    _, rows, cols = video_grid
    ref_rows, ref_cols = reference_grid
    if min(rows, cols, ref_rows, ref_cols) < 1:
        raise ValueError(f"grids must be positive, got video {video_grid} and reference {reference_grid}.")
    h, w = torch.meshgrid(
        torch.arange(ref_rows, dtype=torch.float64) + rows + placement.extra_offset,
        torch.arange(ref_cols, dtype=torch.float64) + cols + placement.extra_offset,
        indexing="ij",
    )
    t = torch.full_like(h, float(placement.time))
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


def rope_angles(positions: Tensor, head_dim: int, theta: float = ROPE_THETA) -> Tensor:
    """Rotation angles ``[L, head_dim // 2]`` (float64) for positions ``[L, 3]`` (time, row, column)."""
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [L, 3], got {tuple(positions.shape)}.")
    parts = []
    for axis, dims in enumerate(axes_dims(head_dim)):
        exponents = torch.arange(0, dims, 2, dtype=torch.float64) / dims
        omega = theta**-exponents
        parts.append(positions[:, axis : axis + 1].to(torch.float64) * omega)
    return torch.cat(parts, dim=-1)


def apply_rope(tokens: Tensor, angles: Tensor) -> Tensor:
    """Rotate ``tokens`` ``[B, L, H, D]`` by ``angles`` ``[L, D/2]``; float32 math (float64 for float64)."""
    if tokens.ndim != 4 or angles.shape != (tokens.shape[1], tokens.shape[-1] // 2):
        raise ValueError(
            f"tokens [B, L, H, D] {tuple(tokens.shape)} and angles [L, D/2] {tuple(angles.shape)} do not match."
        )
    work = torch.float64 if tokens.dtype == torch.float64 else torch.float32
    cos = angles.cos().to(device=tokens.device, dtype=work)[None, :, None, :]
    sin = angles.sin().to(device=tokens.device, dtype=work)[None, :, None, :]
    pairs = tokens.to(work).unflatten(-1, (-1, 2))
    first, second = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return rotated.flatten(-2).to(tokens.dtype)
