"""Exact attention with a low-rank additive bias, run through any fused attention backend.

The bias of CustomVideoX is a sum of rank-one terms (docs/ARCHITECTURE.md, "The bias")::

    logits = query @ keyᵀ * scale + query_bias @ key_biasᵀ        # [B, H, Lq, Lk], never built

``biased_attention`` computes ``softmax(logits) @ value`` exactly without an ``Lq × Lk`` tensor: the ``R``
bias factors are appended as extra head dimensions of the query and the key,

    query' = [query · scale · sqrt(D') | query_bias · α | 0 …]      "B H Lq D'"
    key'   = [key                      | key_bias   · β | 0 …]      "B H Lk D'"
    value' = [value                    | 0 …               ]        "B H Lk D'"

with ``α_r · β_r = sqrt(D')``, so that a backend applying its own softmax scale ``1 / sqrt(D')`` sees
exactly ``scale · query·key + query_bias·key_bias``. ``D'`` is ``D + R`` rounded up to a multiple of 8
(the fused backends' alignment), value is padded to the same ``D'`` (many backends, ComfyUI's included,
require equal head dims) and the output is sliced back to ``D``.

The backend is a plain ``AttentionFn`` — the caller's choice (PyTorch SDPA, flash, sage, xformers) keeps
running; it is the only attention kernel called.

The building blocks (:func:`augment`, :func:`zero_padded`, :func:`augmented_call`, :func:`scaled_attention`)
are also those of the pack's reference attentions (:mod:`customvideox_core.biased_paths`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

AttentionFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(query, key, value) each [B, H, L, D'] -> [B, H, Lq, D']; softmax scale 1/sqrt(D'), no mask."""

HEAD_DIM_ALIGNMENT = 8
"""Augmented head dims are padded to a multiple of this (flash / memory-efficient kernels need it)."""


def sdpa_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """The default ``AttentionFn``: ``torch.nn.functional.scaled_dot_product_attention``, no mask.

    query "B H Lq D", key/value "B H Lk D" -> "B H Lq D"; softmax scale ``1 / sqrt(D)``.
    """
    return F.scaled_dot_product_attention(query, key, value)


def augmented_head_dim(head_dim: int, rank: int) -> int:
    """Head dim ``D'`` the backend sees: ``head_dim + rank`` rounded up to ``HEAD_DIM_ALIGNMENT``."""
    if head_dim < 1 or rank < 0:
        raise ValueError(f"head_dim must be >= 1 and rank >= 0, got head_dim={head_dim}, rank={rank}.")
    return -(-(head_dim + rank) // HEAD_DIM_ALIGNMENT) * HEAD_DIM_ALIGNMENT


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


def augmented_call(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    query_factors: Tensor,
    key_factors: Tensor,
    padded_dim: int,
    multiplier: float,
    attention: AttentionFn,
) -> Tensor:
    """One backend call on the augmented tensors -> "B H Lq D".

    query "B H Lq D" (scaled by ``multiplier``), key/value "B H Lk D", query_factors "B Hb Lq R",
    key_factors "Bk Hb Lk R" (Bk in {1, B}, Hb in {1, H}), both already scaled for the backend's
    ``1 / sqrt(padded_dim)``.
    """
    augmented_query = augment(query, query_factors, padded_dim, multiplier=multiplier)
    augmented_key = augment(key, key_factors, padded_dim, multiplier=None)
    augmented_value = zero_padded(value, padded_dim)
    output = attention(augmented_query, augmented_key, augmented_value)
    expected = (*query.shape[:-1], padded_dim)
    if tuple(output.shape) != expected:
        raise ValueError(
            f"attention_fn returned shape {tuple(output.shape)}, expected {expected} "
            "(B, H, Lq, D' of its query and value). It must return the attention output per head."
        )
    return output[..., : query.shape[-1]]


def _select_heads(factors: Tensor, group: slice) -> Tensor:
    """factors "B Hb L R" (Hb in {1, H}) -> the heads of ``group`` (unchanged when shared by all heads)."""
    return factors if factors.shape[1] == 1 else factors[:, group]


def scaled_attention(
    query: Tensor, key: Tensor, value: Tensor, scale: float, attention: AttentionFn
) -> Tensor:
    """The backend on the unmodified tensors; the query is rescaled only if ``scale`` is not the default."""
    default_scale = 1.0 / math.sqrt(query.shape[-1])
    if not math.isclose(scale, default_scale, rel_tol=1e-12, abs_tol=0.0):
        query = query * (scale / default_scale)
    return attention(query, key, value)


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


def augment(tokens: Tensor, factors: Tensor, padded_dim: int, multiplier: float | None = None) -> Tensor:
    """``[tokens · multiplier | factors | 0 …]`` as one fresh "B H L D'" tensor of tokens' dtype.

    tokens "B H L D", factors "Bf Hb L R" with Bf in {1, B}, Hb in {1, H}; multiplier None = tokens as
    they are. Two passes over the data at most (the scaled
    copy and the small tail), no temporary of tokens' size.
    """
    batch, heads, length, head_dim = tokens.shape
    padding = padded_dim - head_dim - factors.shape[-1]
    tail = torch.cat(  # "B Hb L (D' - D)", small: Hb is usually 1
        [factors.to(tokens.dtype), tokens.new_zeros(1, 1, 1, padding).expand(*factors.shape[:-1], padding)],
        dim=-1,
    ).expand(batch, heads, length, padded_dim - head_dim)
    if multiplier is None:
        return torch.cat([tokens, tail], dim=-1)
    augmented = tokens.new_empty((batch, heads, length, padded_dim))
    torch.mul(tokens, multiplier, out=augmented[..., :head_dim])
    augmented[..., head_dim:] = tail
    return augmented


def zero_padded(tokens: Tensor, padded_dim: int) -> Tensor:
    """tokens "B H L D" -> "B H L D'" with zeros in the new channels, in one copy."""
    padding = padded_dim - tokens.shape[-1]
    return torch.cat([tokens, tokens.new_zeros(1, 1, 1, padding).expand(*tokens.shape[:-1], padding)], dim=-1)


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
