"""3D reference attention for one host attention call, host-free.

The node glue hands every self-attention call of the host DiT to :func:`reference_self_attention`
together with a :class:`ReferenceStep` (what is true for the whole model call: where the tokens sit,
the TAB value of each batch row, the reference token weights, which rows may see the reference).
This module turns that into the rank-one bias factors of DESIGN.md and runs
:func:`customvideox_core.attention.biased_attention` on the backend the user chose.

Tensors arrive in the host's attention layout ``[B, L, (H D)]`` and leave in it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from .attention import AttentionFn, biased_attention
from .erae import ERAEConfig, entity_activation
from .layout import TokenLayout, bias_factors
from .tab import TABSchedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ReferenceStep:
    """What the attention override needs for one model call (one denoising evaluation).

    - ``layout``: where text, video and reference tokens sit in the self-attention sequence.
    - ``tab_per_row``: ``[B]`` TAB value ``b(s)`` for each batch row.
    - ``reference_weights``: ``[1 or B, reference]`` region weights ``m_j`` in ``[0, 1]``.
    - ``blocked``: ``[B, reference]`` bool, reference keys no query may attend to (rows that must not
      see the reference at all have every key blocked), or ``None``.
    - ``erae``: ERAE settings, or ``None`` for no entity enhancement.
    - ``erae_rows``: ``[B]`` bool, rows whose prompt holds the entity words (the conditional rows).
    """

    layout: TokenLayout
    tab_per_row: Tensor
    reference_weights: Tensor
    blocked: Tensor | None
    erae: ERAEConfig | None
    erae_rows: Tensor

    def __post_init__(self) -> None:
        batch = self.tab_per_row.shape[0]
        if self.tab_per_row.ndim != 1:
            raise ValueError(f"tab_per_row must be [B], got shape {tuple(self.tab_per_row.shape)}")
        if self.erae_rows.shape != (batch,):
            raise ValueError(f"erae_rows must be [{batch}], got shape {tuple(self.erae_rows.shape)}")
        if self.blocked is not None and self.blocked.shape != (batch, self.layout.reference):
            raise ValueError(
                f"blocked must be [{batch}, {self.layout.reference}], got {tuple(self.blocked.shape)}"
            )

    @property
    def batch(self) -> int:
        return self.tab_per_row.shape[0]

    @property
    def uses_erae(self) -> bool:
        return self.erae is not None and self.erae.enabled and bool(self.erae_rows.any())


def plan_step(
    layout: TokenLayout,
    *,
    tab: TABSchedule,
    progress: float,
    row_is_cond: Sequence[bool],
    uncond_sees_reference: bool,
    reference_weights: Tensor,
    erae: ERAEConfig | None,
) -> ReferenceStep:
    """Build the :class:`ReferenceStep` of one model call.

    ``row_is_cond``: one flag per batch row (True = conditional / positive prompt). Unconditional rows
    see the reference only when ``uncond_sees_reference``; otherwise every reference key is blocked for
    them, which makes them exactly the plain model's unconditional prediction. Unconditional rows never
    get ERAE (their prompt does not hold the entity words) but do get TAB when they see the reference.
    Reference keys whose weight is 0 are blocked for every row when ``erae.block_outside_mask``.
    ``reference_weights``: ``[reference]`` or ``[1, reference]``.
    """
    device = reference_weights.device
    cond = torch.tensor(list(row_is_cond), dtype=torch.bool, device=device)
    sees_reference = cond | uncond_sees_reference
    weights = reference_weights.reshape(1, -1).to(torch.float32)
    if weights.shape[1] != layout.reference:
        raise ValueError(
            f"reference weights cover {weights.shape[1]} tokens but the layout has {layout.reference} "
            "reference tokens; the reference was prepared for another size"
        )
    blocked = (~sees_reference)[:, None].expand(cond.shape[0], layout.reference)
    if erae is not None and erae.block_outside_mask:
        blocked = blocked | (weights <= 0.0)
    blocked_or_none = blocked.clone() if bool(blocked.any()) else None
    tab_value = float(tab.value_at(progress))
    tab_per_row = torch.full((cond.shape[0],), tab_value, dtype=torch.float32, device=device)
    return ReferenceStep(
        layout=layout,
        tab_per_row=tab_per_row,
        reference_weights=weights,
        blocked=blocked_or_none,
        erae=erae,
        erae_rows=cond.clone(),
    )


def joint_entity_activation(query: Tensor, key: Tensor, heads: int, step: ReferenceStep) -> Tensor | None:
    """Entity activation ``a`` ``[B, video]`` from a joint ``[text | video | reference]`` attention call.

    query/key ``[B, L, (H D)]``. Rows outside ``step.erae_rows`` get ``a = 0``. ``None`` when ERAE is off.
    """
    if not step.uses_erae or step.layout.text == 0:
        return None
    layout = step.layout
    video_queries = rearrange(query[:, layout.video_slice], "b l (h d) -> b h l d", h=heads)
    text_keys = rearrange(key[:, layout.text_slice], "b l (h d) -> b h l d", h=heads)
    return cross_entity_activation(video_queries, text_keys, step)


def cross_entity_activation(video_queries: Tensor, text_keys: Tensor, step: ReferenceStep) -> Tensor | None:
    """Entity activation ``[B, video]`` from video queries ``[B, H, video, D]`` and text keys ``[B, H, T, D]``."""
    if not step.uses_erae:
        return None
    assert step.erae is not None
    activation = entity_activation(
        video_queries,
        text_keys,
        step.erae.entity_positions,
        frame_tokens=step.layout.frame_tokens,
        threshold=step.erae.threshold,
    )
    return activation * step.erae_rows.to(activation.dtype)[:, None]


def reference_self_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    heads: int,
    step: ReferenceStep,
    *,
    attention_fn: AttentionFn,
    activation: Tensor | None = None,
) -> Tensor:
    """Self-attention over ``[text | video | reference]`` tokens with the TAB/ERAE bias.

    query/key/value ``[B, L, (H D)]`` with ``L == step.layout.total``; ``activation`` ``[B, video]``
    (entity activation) or ``None``. Returns ``[B, L, (H D)]``. ``attention_fn`` gets ``[B, H, L, D']``.
    """
    layout = step.layout
    if query.shape[1] != layout.total or key.shape[1] != layout.total:
        raise ValueError(
            f"attention sequence has {query.shape[1]} queries / {key.shape[1]} keys, layout expects {layout.total}"
        )
    if query.shape[0] != step.batch:
        raise ValueError(f"attention batch is {query.shape[0]} rows, the step was planned for {step.batch}")
    gamma = step.erae.gamma if (step.erae is not None and activation is not None) else 0.0
    factors = bias_factors(
        layout,
        tab=step.tab_per_row,
        reference_weights=step.reference_weights,
        entity_activation=activation,
        gamma=gamma,
        blocked=step.blocked,
        dtype=torch.float32,
        device=query.device,
    )
    split = [rearrange(t, "b l (h d) -> b h l d", h=heads) for t in (query, key, value)]
    if factors is None:
        out = attention_fn(*split)
    else:
        query_bias, key_bias = factors
        out = biased_attention(*split, query_bias, key_bias, attention_fn=attention_fn)
    return rearrange(out, "b h l d -> b l (h d)")
