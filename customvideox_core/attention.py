"""Exact attention with a low-rank additive bias, run through any fused attention backend.

The bias of CustomVideoX is a sum of rank-one terms (docs/ARCHITECTURE.md, "The bias")::

    logits = query @ keyᵀ * scale + query_bias @ key_biasᵀ        # [B, H, Lq, Lk], never built

:func:`augmented_call` computes ``softmax(logits) @ value`` exactly without an ``Lq × Lk`` tensor: the
``R`` bias factors are appended as extra head dimensions of the query and the key,

    query' = [query · scale · sqrt(D') | query_bias · α | 0 …]      "B H Lq D'"
    key'   = [key                      | key_bias   · β | 0 …]      "B H Lk D'"
    value' = [value                    | 0 …               ]        "B H Lk D'"

with ``α_r · β_r = sqrt(D')``, so that a backend applying its own softmax scale ``1 / sqrt(D')`` sees
exactly ``scale · query·key + query_bias·key_bias``. ``D'`` is ``D + R`` rounded up to a multiple of 8
(the fused backends' alignment), value is padded to the same ``D'`` (many backends, ComfyUI's included,
require equal head dims) and the output is sliced back to ``D``.

The backend is a plain ``AttentionFn`` — the caller's choice (PyTorch SDPA, flash, sage, xformers) keeps
running; it is the only attention kernel called.

These building blocks (:func:`augment`, :func:`zero_padded`, :func:`augmented_call`,
:func:`scaled_attention`) are those of the pack's one reference attention
(:mod:`customvideox_core.biased_paths`); the generic dense-factor form the tests check them against lives
in ``tests/unit/bias_oracles.py``.
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


def scaled_attention(
    query: Tensor, key: Tensor, value: Tensor, scale: float, attention: AttentionFn
) -> Tensor:
    """The backend on the unmodified tensors; the query is rescaled only if ``scale`` is not the default."""
    default_scale = 1.0 / math.sqrt(query.shape[-1])
    if not math.isclose(scale, default_scale, rel_tol=1e-12, abs_tol=0.0):
        query = query * (scale / default_scale)
    return attention(query, key, value)


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
