"""Test oracles of the bias (docs/ARCHITECTURE.md, "The bias") that the product does not call.

- :func:`biased_attention`: exact attention with a dense-factor low-rank bias ``query_bias @ key_biasᵀ``
  through any backend (the bias factors as extra head dims; once ``customvideox_core.attention``'s public
  helper, now a reference the tests and the dense benchmark row check the pack's paths against);
- :func:`bias_factors`: the factors of the CustomVideoX bias over a whole ``[text | video | reference]``
  layout (once ``customvideox_core.layout``'s), built the long way.

The pack computes the same bias once per model call as a table of sources
(``customvideox_core.reference_sources``); these are independent second writings of the formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from customvideox_core.attention import (
    AttentionFn,
    augmented_call,
    augmented_head_dim,
    scaled_attention,
    sdpa_attention,
)
from customvideox_core.layout import TokenLayout


def biased_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    query_bias: Tensor | None = None,
    key_bias: Tensor | None = None,
    *,
    scale: float | None = None,
    attention_fn: AttentionFn | None = None,
    heads_per_call: int | None = None,
) -> Tensor:
    """``softmax(query @ keyᵀ * scale + query_bias @ key_biasᵀ) @ value``, exactly, without an Lq × Lk tensor.

    Args:
        query: "B H Lq D".
        key, value: "B H Lk D".
        query_bias: "B Lq R" (shared by all heads) or "B H Lq R" (per head; H may be 1), or None.
        key_bias: "B Lk R" or "B H Lk R" (H may be 1), or None. Both biases or neither.
        scale: softmax scale of ``query @ keyᵀ``; defaults to ``1 / sqrt(D)``.
        attention_fn: the backend, called only as ``attention_fn(q, k, v)`` on "B H L D'" tensors with
            equal head dims; defaults to ``sdpa_attention``.
        heads_per_call: None (default) calls the backend once with all H heads. A number ``n < H`` calls
            it on groups of ``n`` heads ("B n L D'", the last group possibly smaller), bounding the extra
            memory of the augmented tensors to ``n / H`` of the one-call path at the cost of more
            backend launches; the backend must then take the head count from its inputs' shape.

    Returns:
        "B H Lq D" in the inputs' dtype. With a non-zero bias and one backend call it is a view (a slice of
        the last dim) of the backend's "B H Lq D'" output.

    Biases that are None, of rank 0 or all zero take a fast path: the backend runs on the unmodified
    tensors (the query pre-multiplied when ``scale`` differs from ``1 / sqrt(D)``). Rank-one terms that
    are zero on either side are dropped. Checking for zeros reads one ``2 × R`` tensor back to the host.

    The magnitude of each rank-one term is split evenly between the query and the key side. The pack's
    attentions (``reference_attention``, Stand-In's ``standin/video_attention``) do not call this
    function: they run :mod:`customvideox_core.biased_paths` (an LSE merge, and an augmented fallback
    with fixed factor scales built on :func:`augmented_call`), which reads nothing back to the host. This
    is the generic public helper for a bias given as dense factors (tests and ``layout.bias_factors``).
    """
    batch, heads, query_len, head_dim = _check_qkv(query, key, value)
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    elif not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}.")
    attention = sdpa_attention if attention_fn is None else attention_fn
    if heads_per_call is not None and (
        isinstance(heads_per_call, bool) or not isinstance(heads_per_call, int) or heads_per_call < 1
    ):
        raise ValueError(f"heads_per_call must be None or a positive integer, got {heads_per_call!r}.")

    if query_bias is None and key_bias is None:
        return scaled_attention(query, key, value, scale, attention)
    if query_bias is None or key_bias is None:
        raise ValueError(
            "query_bias and key_bias must both be tensors or both be None, got "
            f"query_bias={_describe(query_bias)}, key_bias={_describe(key_bias)}. "
            "Pass None for both to run without a bias."
        )
    query_bias = _check_bias("query_bias", query_bias, query, batch, heads, query_len)
    key_bias = _check_bias("key_bias", key_bias, key, batch, heads, key.shape[2])
    if query_bias.shape[-1] != key_bias.shape[-1]:
        raise ValueError(
            f"query_bias and key_bias must have the same rank R (last dim), got {query_bias.shape[-1]} "
            f"(query_bias {tuple(query_bias.shape)}) and {key_bias.shape[-1]} (key_bias {tuple(key_bias.shape)})."
        )

    factors = _balanced_factors(query_bias, key_bias, head_dim)
    if factors is None:
        return scaled_attention(query, key, value, scale, attention)
    query_factors, key_factors = factors
    padded_dim = augmented_head_dim(head_dim, query_factors.shape[-1])
    multiplier = scale * math.sqrt(padded_dim)
    if heads_per_call is None or heads_per_call >= heads:
        return augmented_call(
            query, key, value, query_factors, key_factors, padded_dim, multiplier, attention
        )
    output = query.new_empty(query.shape)
    for start in range(0, heads, heads_per_call):
        group = slice(start, min(start + heads_per_call, heads))
        output[:, group] = augmented_call(
            query[:, group],
            key[:, group],
            value[:, group],
            _select_heads(query_factors, group),
            _select_heads(key_factors, group),
            padded_dim,
            multiplier,
            attention,
        )
    return output


def _select_heads(factors: Tensor, group: slice) -> Tensor:
    """factors "B Hb L R" (Hb in {1, H}) -> the heads of ``group`` (unchanged when shared by all heads)."""
    return factors if factors.shape[1] == 1 else factors[:, group]


def _balanced_factors(query_bias: Tensor, key_bias: Tensor, head_dim: int) -> tuple[Tensor, Tensor] | None:
    """Scale each rank-one term so that both sides have the same peak magnitude, dropping zero terms.

    query_bias "B Hb Lq R", key_bias "B Hb Lk R" -> (query factors "B Hb Lq R'", key factors "B Hb Lk R'"),
    ``R' <= R`` the terms that are non-zero on both sides, or None when every term is zero. The factors
    are scaled so that their product is ``sqrt(D')`` times the bias (the backend divides by ``sqrt(D')``).
    """
    peaks = torch.stack(
        [query_bias.abs().amax(dim=(0, 1, 2)), key_bias.abs().amax(dim=(0, 1, 2))]
    ).double()  # "2 R"; the only host read-back
    query_peaks, key_peaks = peaks.tolist()
    active = [r for r, (qp, kp) in enumerate(zip(query_peaks, key_peaks, strict=True)) if qp * kp != 0.0]
    if not active:
        return None
    root_dim = math.sqrt(augmented_head_dim(head_dim, len(active)))
    query_multipliers, key_multipliers = [], []
    for r in active:
        ratio = key_peaks[r] / query_peaks[r]
        if math.isfinite(ratio) and ratio > 0.0:
            query_multipliers.append(math.sqrt(root_dim * ratio))
            key_multipliers.append(math.sqrt(root_dim / ratio))
        else:  # inf/nan peaks: no balancing possible, let the non-finite values propagate as they are
            query_multipliers.append(root_dim)
            key_multipliers.append(1.0)
    if len(active) < query_bias.shape[-1]:
        index = torch.tensor(active, device=query_bias.device)
        query_bias, key_bias = query_bias.index_select(-1, index), key_bias.index_select(-1, index)
    compute_dtype = torch.promote_types(torch.promote_types(query_bias.dtype, key_bias.dtype), torch.float32)
    query_factors = query_bias.to(compute_dtype) * torch.tensor(
        query_multipliers, dtype=compute_dtype, device=query_bias.device
    )
    key_factors = key_bias.to(compute_dtype) * torch.tensor(
        key_multipliers, dtype=compute_dtype, device=key_bias.device
    )
    return query_factors, key_factors


def _check_qkv(query: Tensor, key: Tensor, value: Tensor) -> tuple[int, int, int, int]:
    """Validate query "B H Lq D", key/value "B H Lk D"; return (B, H, Lq, D)."""
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if tensor.ndim != 4:
            raise ValueError(
                f"{name} must be a 4-D tensor [B, H, L, D], got {tensor.ndim}-D shape {tuple(tensor.shape)}. "
                "Split the heads out of the channel dim first ('B L (H D) -> B H L D')."
            )
    batch, heads, query_len, head_dim = query.shape
    if key.shape != value.shape or key.shape[:2] != query.shape[:2] or key.shape[3] != head_dim:
        raise ValueError(
            f"key and value must both be [B, H, Lk, D] = [{batch}, {heads}, Lk, {head_dim}] to match query "
            f"{tuple(query.shape)}, got key {tuple(key.shape)} and value {tuple(value.shape)}."
        )
    if not (query.dtype == key.dtype == value.dtype) or not (query.device == key.device == value.device):
        raise ValueError(
            "query, key and value must share dtype and device, got "
            f"{query.dtype}/{query.device}, {key.dtype}/{key.device}, {value.dtype}/{value.device}."
        )
    if not query.is_floating_point():
        raise ValueError(f"query, key and value must be floating point, got {query.dtype}.")
    return batch, heads, query_len, head_dim


def _check_bias(name: str, bias: Tensor, tokens: Tensor, batch: int, heads: int, length: int) -> Tensor:
    """Validate a bias "B L R" or "B Hb L R" (Hb in {1, H}); return it as "B Hb L R"."""
    if bias.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be [B, L, R] or [B, H, L, R], got {bias.ndim}-D shape {tuple(bias.shape)}."
        )
    if bias.ndim == 3:
        bias = bias.unsqueeze(1)
    got_batch, got_heads, got_length, _ = bias.shape
    if got_batch != batch or got_heads not in (1, heads) or got_length != length:
        raise ValueError(
            f"{name} shape {tuple(bias.shape)} (heads dim added if 3-D) does not fit: expected "
            f"[B={batch}, H in (1, {heads}), L={length}, R], got B={got_batch}, H={got_heads}, L={got_length}."
        )
    if not bias.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {bias.dtype}.")
    if bias.device != tokens.device:
        raise ValueError(f"{name} is on {bias.device} but the attention inputs are on {tokens.device}.")
    return bias


def _describe(tensor: Tensor | None) -> str:
    return "None" if tensor is None else f"tensor of shape {tuple(tensor.shape)}"


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
