"""The video's self-attention with Stand-In's reference: video queries over ``[video | reference]`` keys.

Stand-In (``SelfAttention.forward``, cached path): the video queries attend to the video keys followed by
the cached reference keys; reference queries are not computed any more (their output was only needed to
fill the cache). On top of the published method, this pack's TAB/ERAE bias acts on the video → reference
logits only (docs/ARCHITECTURE.md, "The bias")::

    logit(i, j) = q_i · k_j / sqrt(d) + b(s) · (1 + γ · a_i) · m_j      (j a reference key)

run exactly through :func:`customvideox_core.attention.biased_attention` on the user's backend. With
``b(s) = 0`` (no TAB connected) the result is the published method. Rows (cond/uncond) that must not
see the reference and reference keys outside the subject mask when blocking is on are *dropped* from the
keys, never blocked by a large logit.

Tensors arrive in the host's layout ``[B, L, (H D)]`` and leave in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from ..attention import AttentionFn, biased_attention
from ..erae import ERAEConfig


@dataclass(frozen=True, eq=False)
class VideoStep:
    """What one model call needs (one denoising evaluation of a batch).

    - ``sees_reference``: per batch row, whether its queries see the reference keys.
    - ``tab_per_row``: per batch row, the TAB value ``b(s)``.
    - ``reference_weights``: ``m_j`` ``[Lr]`` in ``[0, 1]`` (the subject mask pooled to the reference grid).
    - ``kept``: indices of the reference tokens kept (None = all); blocked tokens are dropped.
    - ``gamma``: ERAE strength, 0 = off; ``erae_rows``: rows whose prompt holds the entity words.
    - ``entity_positions``: the text positions of the words ERAE reads for this one reference image (the
      words bound to image 1 when ERAEMask binds subjects, else the unbound entity words).
    """

    sees_reference: tuple[bool, ...]
    tab_per_row: tuple[float, ...]
    reference_weights: Tensor
    kept: Tensor | None
    gamma: float
    erae_rows: tuple[bool, ...]
    entity_positions: tuple[int, ...] = ()

    @property
    def batch(self) -> int:
        return len(self.sees_reference)

    @property
    def uses_bias(self) -> bool:
        return any(
            tab != 0.0 for tab, sees in zip(self.tab_per_row, self.sees_reference, strict=True) if sees
        )


def plan_video_step(
    *,
    row_is_cond: Sequence[bool],
    row_sees_reference: Sequence[bool],
    tab_value: float,
    reference_weights: Tensor,
    erae: ERAEConfig | None,
) -> VideoStep:
    """The :class:`VideoStep` of one call. Per batch row: ``row_is_cond`` (positive prompt: ERAE acts
    there only) and ``row_sees_reference`` (its queries see the reference keys); ``reference_weights``
    ``[Lr]``."""
    cond = tuple(bool(flag) for flag in row_is_cond)
    if len(row_sees_reference) != len(cond):
        raise ValueError(f"{len(row_sees_reference)} reference flags for {len(cond)} rows")
    weights = reference_weights.reshape(-1).to(torch.float32)
    kept = None
    if erae is not None and erae.block_outside_mask:
        inside = torch.nonzero(weights > 0.0).reshape(-1)
        if inside.numel() == 0:
            raise ValueError(
                "the subject mask is empty on the reference token grid, and block_outside_mask would remove "
                "every reference token: draw a larger mask or turn block_outside_mask off."
            )
        if inside.numel() < weights.numel():
            kept = inside
    # One reference image: one bias term, the words bound to it or else the unbound ones.
    positions = erae.bias_terms(1)[0][0] if erae is not None else ()
    gamma = erae.gamma if (erae is not None and positions) else 0.0
    return VideoStep(
        sees_reference=tuple(bool(flag) for flag in row_sees_reference),
        tab_per_row=tuple(float(tab_value) for _ in cond),
        reference_weights=weights,
        kept=kept,
        gamma=float(gamma),
        erae_rows=cond,
        entity_positions=tuple(positions),
    )


def video_self_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    reference_key: Tensor,
    reference_value: Tensor,
    heads: int,
    step: VideoStep,
    *,
    attention_fn: AttentionFn,
    activation: Tensor | None = None,
) -> Tensor:
    """Video self-attention with the reference appended to the keys.

    query/key/value ``[B, Lv, (H D)]`` (video tokens, RoPE applied); reference_key/value ``[1, Lr, (H D)]``;
    ``activation`` ``[B, Lv]`` entity activation (ERAE) or None. Returns ``[B, Lv, (H D)]``.
    ``attention_fn`` gets ``[b, H, Lq, D']`` tensors, never a mask.
    """
    if query.shape[0] != step.batch:
        raise ValueError(f"attention batch is {query.shape[0]} rows, the step was planned for {step.batch}.")
    if reference_key.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"reference keys are {reference_key.shape[-1]} wide, the video's {key.shape[-1]}: the cached "
            "reference was computed for another model."
        )
    split = [rearrange(t, "b l (h d) -> b h l d", h=heads) for t in (query, key, value)]
    ref_key, ref_value = (
        rearrange(t, "b l (h d) -> b h l d", h=heads) for t in (reference_key, reference_value)
    )
    weights = step.reference_weights.to(device=query.device)
    if step.kept is not None:
        kept = step.kept.to(query.device)
        ref_key, ref_value, weights = ref_key[:, :, kept], ref_value[:, :, kept], weights[kept]

    seeing = [row for row, sees in enumerate(step.sees_reference) if sees]
    if len(seeing) == step.batch:
        out = _with_reference(split, ref_key, ref_value, weights, step, seeing, activation, attention_fn)
    elif not seeing:
        out = attention_fn(*split)
    else:
        blind = [row for row, sees in enumerate(step.sees_reference) if not sees]
        out = torch.empty_like(split[0])
        out[blind] = attention_fn(*(t[blind] for t in split))
        out[seeing] = _with_reference(
            [t[seeing] for t in split], ref_key, ref_value, weights, step, seeing, activation, attention_fn
        )
    return rearrange(out, "b h l d -> b l (h d)")


def _with_reference(
    split: list[Tensor],
    ref_key: Tensor,
    ref_value: Tensor,
    weights: Tensor,
    step: VideoStep,
    rows: list[int],
    activation: Tensor | None,
    attention_fn: AttentionFn,
) -> Tensor:
    """Attention of ``rows`` (their q/k/v in ``split``, ``[b, H, Lv, D]``) over ``[video | reference]``."""
    query, key, value = split
    count = query.shape[0]
    ref_key = ref_key.to(device=key.device, dtype=key.dtype)
    ref_value = ref_value.to(device=value.device, dtype=value.dtype)
    full_key = torch.cat([key, ref_key.expand(count, -1, -1, -1)], dim=2)
    full_value = torch.cat([value, ref_value.expand(count, -1, -1, -1)], dim=2)
    tabs = [step.tab_per_row[row] for row in rows]
    if all(tab == 0.0 for tab in tabs):
        return attention_fn(query, full_key, full_value)
    video_len, ref_len = key.shape[2], ref_key.shape[2]
    work = torch.promote_types(query.dtype, torch.float32)  # the bias factors: float32, float64 for float64
    video_factor = torch.tensor(tabs, dtype=work, device=query.device)[:, None].expand(count, video_len)
    if activation is not None and step.gamma != 0.0:
        erae_rows = torch.tensor([step.erae_rows[row] for row in rows], device=query.device)
        row_activation = activation[rows].to(work) * erae_rows[:, None]
        video_factor = video_factor * (1.0 + step.gamma * row_activation)
    query_bias = video_factor[..., None]
    key_bias = torch.cat(
        [
            torch.zeros(count, video_len, dtype=work, device=query.device),
            weights.to(work)[None].expand(count, ref_len),
        ],
        dim=1,
    )[..., None]
    return biased_attention(query, full_key, full_value, query_bias, key_bias, attention_fn=attention_fn)
