"""Token layout of one host attention sequence and the low-rank factors of the CustomVideoX bias.

The sequence of one attention call is ``[text | video | reference]``. The bias added to its logits is
(docs/ARCHITECTURE.md, "The bias")::

    video query i, reference key j:        b(s) * sum_k (1 + gamma * a_i^k) * m_j^k
    everything else:                       0

with one term ``k`` per group of reference frames (one group, all frames, unless ERAE binds words to
single reference images; ``m_j^k = m_j`` on the frames of group k, else 0). It is a sum of K rank-one
terms, returned as factors ``query_bias [B, L, K]`` and ``key_bias [B, L, K]`` with
``bias = query_bias @ key_bias^T``; no ``L x L`` tensor is ever built. Keys that must not be seen are
dropped from the attention call (``reference_attention``), never blocked with a large logit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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
    term_frames: Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor] | None:
    """Rank-K factors ``(query_bias [B, total, K], key_bias [B, total, K])`` of the CustomVideoX bias.

    ``query_bias @ key_bias^T`` (per batch row) equals the bias of docs/ARCHITECTURE.md:

    - video query ``i``, reference key ``j``: ``tab[b] * sum_k (1 + gamma * a[b, i, k]) * m[b, j] * [j in k]``;
    - everything else 0 (text and reference queries get no TAB/ERAE bias).

    Args:
        layout: the ``[text | video | reference]`` layout of the attention sequence.
        tab: ``[B]`` TAB value ``b(s)`` per batch row (rows may be at different sigmas).
        reference_weights: ``m``, ``[B, reference]`` or ``[1, reference]`` (broadcast), in ``[0, 1]``.
        entity_activation: ``a``, ``[B, video]`` (one term) or ``[B, video, K]``, in ``[0, 1]``, or None.
        gamma: ERAE strength (0 = off; negative weakens); ignored when ``entity_activation`` is None.
        term_frames: the reference frames of each term (K groups); None = one term over all frames.
        dtype, device: of the returned factors (default device: ``tab``'s).

    Returns:
        ``None`` when the bias is identically zero (use plain attention), else the two factors. This
        reads the data back to decide; the attention hot path (``reference_attention``) does not use it.
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
    frames = tuple(range(layout.reference_frames)) if term_frames is None else None
    groups = [frames] if term_frames is None else [tuple(group) for group in term_frames]
    for group in groups:
        outside = [frame for frame in group if not 0 <= frame < layout.reference_frames]
        if outside:
            raise ValueError(
                f"term_frames names reference frames {outside}; the layout has {layout.reference_frames}."
            )
    terms = len(groups)

    weights = _batch_rows(
        "reference_weights", reference_weights, batch, layout.reference, "one weight per reference token"
    )
    if entity_activation is not None:
        if entity_activation.ndim == 2:
            entity_activation = entity_activation[..., None]
        _check_shape(
            "entity_activation",
            entity_activation,
            (batch, layout.video, terms),
            "one activation per video token and term",
        )

    tab_rows = tab.to(device=device, dtype=work_dtype)
    weights = weights.to(device=device, dtype=work_dtype)
    for name, tensor in (("tab", tab_rows), ("reference_weights", weights)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers.")

    video_factor = tab_rows[:, None, None].expand(batch, layout.video, terms)
    if entity_activation is not None and gamma != 0.0:
        activation = entity_activation.to(device=device, dtype=work_dtype)
        if not bool(torch.isfinite(activation).all()):
            raise ValueError("entity_activation contains NaN or infinite values; expected values in [0, 1].")
        video_factor = video_factor * (1.0 + gamma * activation)
    frame_of_token = torch.arange(layout.reference, device=device) // layout.frame_tokens
    membership = torch.stack(
        [
            torch.isin(frame_of_token, torch.tensor(group, dtype=torch.long, device=device))
            for group in groups
        ],
        dim=-1,
    ).to(work_dtype)  # "reference K"
    key_terms = weights[:, :, None] * membership

    if not bool(torch.einsum("bvk,brk->b", video_factor.abs(), key_terms.abs()).any()):
        return None
    query_bias = torch.zeros(batch, layout.total, terms, dtype=work_dtype, device=device)
    key_bias = torch.zeros(batch, layout.total, terms, dtype=work_dtype, device=device)
    query_bias[:, layout.video_slice] = video_factor
    key_bias[:, layout.reference_slice] = key_terms
    return query_bias.to(dtype), key_bias.to(dtype)
