"""Token layout of one host attention sequence and the low-rank factors of the CustomVideoX bias.

The sequence of one attention call is ``[text | video | reference]``. The bias added to its logits is
(DESIGN.md, "The bias, precisely")::

    video query i, reference key j:        b(s) * (1 + gamma * a_i) * m_j
    any query, blocked reference key j:    + BLOCK_LOGIT
    everything else:                       0

It is a sum of at most two rank-one terms, so it is returned as factors ``query_bias [B, L, R]`` and
``key_bias [B, L, R]`` with ``bias = query_bias @ key_bias^T``; no ``L x L`` tensor is ever built.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

BLOCK_LOGIT: float = -1.0e4
"""Additive logit that removes a key: ``exp(-1e4 + logit)`` underflows to exactly 0 in float32."""


@dataclass(frozen=True)
class TokenLayout:
    """Where tokens sit in one host attention sequence, in this order: ``[text | video | reference]``.

    - ``text``: text tokens inside this attention (CogVideoX joint attention: 226; Wan self-attention: 0).
    - ``video``: video tokens (latent frames x ``frame_tokens``).
    - ``reference``: reference tokens (reference frames x ``frame_tokens``).
    - ``frame_tokens``: tokens per latent frame (patch grid ``h x w``).
    """

    text: int
    video: int
    reference: int
    frame_tokens: int

    def __post_init__(self) -> None:
        for name in ("text", "video", "reference", "frame_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TokenLayout.{name} must be a non-negative integer, got {value!r}.")
        if self.frame_tokens == 0:
            raise ValueError("TokenLayout.frame_tokens must be positive (tokens per latent frame, h * w).")
        for name in ("video", "reference"):
            count = getattr(self, name)
            if count % self.frame_tokens:
                raise ValueError(
                    f"TokenLayout.{name}={count} is not a whole number of frames of "
                    f"frame_tokens={self.frame_tokens} tokens; expected a multiple of {self.frame_tokens}."
                )

    @property
    def total(self) -> int:
        """Sequence length ``L = text + video + reference``."""
        return self.text + self.video + self.reference

    @property
    def text_slice(self) -> slice:
        return slice(0, self.text)

    @property
    def video_slice(self) -> slice:
        return slice(self.text, self.text + self.video)

    @property
    def reference_slice(self) -> slice:
        return slice(self.text + self.video, self.total)

    @property
    def video_frames(self) -> int:
        return self.video // self.frame_tokens

    @property
    def reference_frames(self) -> int:
        return self.reference // self.frame_tokens

    @classmethod
    def cogvideox(cls, *, text: int, frames: int, reference_frames: int, frame_tokens: int) -> TokenLayout:
        """CogVideoX joint attention: ``[text | video frames | reference frames appended after the video]``."""
        return cls(
            text=text,
            video=frames * frame_tokens,
            reference=reference_frames * frame_tokens,
            frame_tokens=frame_tokens,
        )

    @classmethod
    def wan(cls, *, frames: int, reference_frames: int, frame_tokens: int) -> TokenLayout:
        """Wan self-attention: ``[video frames | reference frames]`` (text lives in cross-attention)."""
        return cls(
            text=0,
            video=frames * frame_tokens,
            reference=reference_frames * frame_tokens,
            frame_tokens=frame_tokens,
        )


def _check_shape(name: str, tensor: Tensor, expected: tuple[int, ...], hint: str) -> None:
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {expected} ({hint}).")


def _batch_rows(name: str, tensor: Tensor, batch: int, width: int, hint: str) -> Tensor:
    """Check ``tensor`` is ``[batch, width]`` or ``[1, width]`` and expand it to ``[batch, width]``."""
    if tensor.ndim != 2 or tensor.shape[1] != width or tensor.shape[0] not in (1, batch):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}, expected ({batch}, {width}) or (1, {width}) ({hint})."
        )
    return tensor.expand(batch, width)


def bias_factors(
    layout: TokenLayout,
    *,
    tab: Tensor,
    reference_weights: Tensor,
    entity_activation: Tensor | None = None,
    gamma: float = 0.0,
    blocked: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor] | None:
    """Rank-R factors ``(query_bias [B, total, R], key_bias [B, total, R])`` of the CustomVideoX bias.

    ``query_bias @ key_bias^T`` (per batch row) equals the DESIGN.md bias:

    - video query ``i``, reference key ``j``: ``tab[b] * (1 + gamma * a[b, i]) * m[b, j]``;
    - any query (text, video, reference) to a blocked reference key: ``+ BLOCK_LOGIT``;
    - everything else 0 (text and reference queries get no TAB/ERAE bias).

    Args:
        layout: the ``[text | video | reference]`` layout of the attention sequence.
        tab: ``[B]`` TAB value ``b(s)`` per batch row (rows may be at different sigmas).
        reference_weights: ``m``, ``[B, reference]`` or ``[1, reference]`` (broadcast), in ``[0, 1]``.
        entity_activation: ``a``, ``[B, video]`` in ``[0, 1]``, or None for no ERAE.
        gamma: ERAE strength (0 = off; negative weakens); ignored when ``entity_activation`` is None.
        blocked: ``[B, reference]`` or ``[1, reference]`` bool, True = key removed for every query of that
            row; a row that must not see the reference at all (the unconditional pass) is all True.
        dtype, device: of the returned factors (default device: ``tab``'s).

    Returns:
        ``None`` when the bias is identically zero (use plain attention), else the two factors with
        ``R = 1`` when nothing is blocked and ``R = 2`` otherwise (column 0: TAB/ERAE, column 1: block).
    """
    if not isinstance(layout, TokenLayout):
        raise TypeError(f"layout must be a TokenLayout, got {type(layout).__name__}.")
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma):
        raise ValueError(f"gamma (ERAE strength) must be a finite number, got {gamma!r}.")
    if tab.ndim != 1 or tab.shape[0] == 0:
        raise ValueError(f"tab has shape {tuple(tab.shape)}, expected (B,) with B >= 1 (one b(s) per row).")
    batch = tab.shape[0]
    device = tab.device if device is None else torch.device(device)
    work_dtype = torch.promote_types(dtype, torch.float32)

    weights = _batch_rows(
        "reference_weights", reference_weights, batch, layout.reference, "one weight per reference token"
    )
    if blocked is not None:
        if blocked.dtype != torch.bool:
            raise ValueError(f"blocked must be a bool tensor, got dtype {blocked.dtype}.")
        blocked = _batch_rows("blocked", blocked, batch, layout.reference, "one flag per reference token")
    if entity_activation is not None:
        _check_shape(
            "entity_activation", entity_activation, (batch, layout.video), "one activation per video token"
        )

    tab_rows = tab.to(device=device, dtype=work_dtype)
    weights = weights.to(device=device, dtype=work_dtype)
    for name, tensor in (("tab", tab_rows), ("reference_weights", weights)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers.")

    video_factor = tab_rows[:, None].expand(batch, layout.video)
    if entity_activation is not None and gamma != 0.0:
        activation = entity_activation.to(device=device, dtype=work_dtype)
        if not bool(torch.isfinite(activation).all()):
            raise ValueError("entity_activation contains NaN or infinite values; expected values in [0, 1].")
        video_factor = video_factor * (1.0 + gamma * activation)

    has_bias_term = bool((video_factor != 0).any(dim=1).logical_and((weights != 0).any(dim=1)).any())
    has_block = blocked is not None and bool(blocked.any())
    if not has_bias_term and not has_block:
        return None

    rank = 2 if has_block else 1
    query_bias = torch.zeros(batch, layout.total, rank, dtype=work_dtype, device=device)
    key_bias = torch.zeros(batch, layout.total, rank, dtype=work_dtype, device=device)
    query_bias[:, layout.video_slice, 0] = video_factor
    key_bias[:, layout.reference_slice, 0] = weights
    if has_block:
        query_bias[:, :, 1] = 1.0
        key_bias[:, layout.reference_slice, 1] = blocked.to(device=device, dtype=work_dtype) * BLOCK_LOGIT
    return query_bias.to(dtype), key_bias.to(dtype)
