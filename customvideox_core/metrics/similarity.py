"""Cosine similarities between embeddings, and the paper's four measures built from them.

Embeddings are ``[N, D]``; every similarity is computed in float64 from the L2-normalised rows.

- identity (CLIP-I, DINO-I): per scored frame ``f``, ``mean_r cos(reference_r, frame_f)`` over the
  references (several references: the mean of the per-reference scores);
- temporal consistency (T.Cons): ``cos(frame_k, frame_k+1)`` for consecutive scored frames;
- text (CLIP-T): ``cos(text, frame_f)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rows(embeddings: Tensor, label: str) -> Tensor:
    if embeddings.ndim == 1:
        embeddings = embeddings[None]
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"{label} has shape {tuple(embeddings.shape)}, expected (N, D) with N >= 1.")
    embeddings = embeddings.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{label} holds NaN or infinite values; the encoder's output is unusable.")
    norms = embeddings.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{label} holds an all-zero embedding, whose direction (and cosine) is undefined.")
    return embeddings / norms


def cosine_matrix(first: Tensor, second: Tensor) -> Tensor:
    """``[A, D] × [B, D] → [A, B]`` float64 cosine similarities."""
    a, b = _rows(first, "first embeddings"), _rows(second, "second embeddings")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"embeddings of width {a.shape[1]} and {b.shape[1]} cannot be compared; both must come from "
            "the same encoder (the same embedding space)."
        )
    return a @ b.T


def identity_per_reference(reference_embeds: Tensor, frame_embeds: Tensor) -> Tensor:
    """``[R, D], [F, D] → [R, F]``: each reference's cosine with each scored frame."""
    return cosine_matrix(reference_embeds, frame_embeds)


def identity_per_frame(reference_embeds: Tensor, frame_embeds: Tensor) -> Tensor:
    """``[R, D], [F, D] → [F]``: the mean over references of ``cos(reference, frame)``."""
    return identity_per_reference(reference_embeds, frame_embeds).mean(dim=0)


def temporal_consistency(frame_embeds: Tensor) -> Tensor:
    """``[F, D] → [F − 1]``: ``cos(frame_k, frame_k+1)``; empty for a single frame."""
    rows = _rows(frame_embeds, "frame embeddings")
    return (rows[:-1] * rows[1:]).sum(dim=-1)


def text_per_frame(text_embed: Tensor, frame_embeds: Tensor) -> Tensor:
    """``[D] or [1, D], [F, D] → [F]``: ``cos(text, frame)``."""
    if text_embed.ndim == 2 and text_embed.shape[0] != 1:
        raise ValueError(
            f"the text embedding has shape {tuple(text_embed.shape)}; expected one prompt (1, D)."
        )
    return cosine_matrix(text_embed, frame_embeds)[0]
