"""The video's self-attention with Stand-In's reference: video queries over ``[video | reference]`` keys.

Stand-In (``SelfAttention.forward``, cached path): the video queries attend to the video keys followed by
the cached reference keys; reference queries are not computed any more (their output was only needed to
fill the cache). On top of the published method, this pack's TAB/ERAE bias acts on the video → reference
logits only (docs/ARCHITECTURE.md, "The bias")::

    logit(i, j) = q_i · k_j / sqrt(d) + b(s) · (1 + γ · a_i) · m_j      (j a reference key)

run exactly through the pack's biased paths (:mod:`customvideox_core.biased_paths`), the same as the
pack's own reference attention: with the video keys as the many keys and the kept reference keys as the
biased ones, ``"lse-merge"`` on the user's backend's LSE kernel at the native head dim (the bias as a mask
on the CPU), ``"augmented"`` (the bias as extra head dims) otherwise. With ``b(s) = 0`` (no TAB connected)
the result is the published method. Rows (cond/uncond) that must not see the reference and reference keys
outside the subject mask when blocking is on are *dropped* from the keys, never blocked by a large logit.

Everything that does not depend on the layer (row groups, kept reference indices, the key side of the
bias, the TAB value of each row) is built once per model call: the step is one cached source of the table
of reference sources (:func:`as_source`), planned and run by :mod:`customvideox_core.reference_sources`,
the same attention as the pack's own reference; an attention call reads nothing back to the host. The
kept reference keys are selected from the cache before they are cast to the video's dtype.

Tensors arrive in the host's layout ``[B, L, (H D)]`` and leave in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from ..attention import AttentionFn
from ..biased_paths import BiasedPaths
from ..erae import ERAEConfig
from ..layout import TokenLayout
from ..lse_attention import LseKernel
from ..reference_sources import Source, SourcePlan, plan_sources, sources_self_attention

VideoPlan = SourcePlan
"""The plan of a :class:`VideoStep`: a :class:`~customvideox_core.reference_sources.SourcePlan` of its one
cached source."""

SOURCE_NAME = "standin"
"""The name of Stand-In's cached source in a step's table of sources."""


@dataclass(frozen=True, eq=False)
class VideoStep:
    """What one model call needs (one denoising evaluation of a batch).

    - ``sees_reference``: per batch row, whether its queries see the reference keys.
    - ``tab_per_row``: per batch row, the TAB value ``b(s)``.
    - ``reference_weights``: ``m_j`` ``[Lr]`` float32 in ``[0, 1]`` (the subject mask pooled to the
      reference grid), on the device the attention runs on.
    - ``kept``: indices of the reference tokens kept (None = all); blocked tokens are dropped.
    - ``gamma``: ERAE strength, 0 = off; ``erae_rows``: rows whose prompt holds the entity words.
    - ``entity_positions``: the text positions of the words ERAE reads for this one reference image (the
      words bound to image 1 when ERAEMask binds subjects, else the unbound entity words).

    ``plan`` (made on first use, the only host read-back of the call) holds the row groups, the kept
    indices and the factors of the bias.
    """

    sees_reference: tuple[bool, ...]
    tab_per_row: tuple[float, ...]
    reference_weights: Tensor
    kept: Tensor | None
    gamma: float
    erae_rows: tuple[bool, ...]
    entity_positions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.tab_per_row) != self.batch or len(self.erae_rows) != self.batch:
            raise ValueError(
                f"the Stand-In step has {self.batch} reference flags (sees_reference), {len(self.tab_per_row)} "
                f"TAB values and {len(self.erae_rows)} ERAE flags (erae_rows, the cond rows); expected the "
                "same number of each: one per batch row"
            )

    @cached_property
    def plan(self) -> VideoPlan:
        """The step's one-source :class:`SourcePlan`, made on first use (the wrapper plans the step with
        the call's other sources through :func:`as_source` and never makes it)."""
        return plan_sources([as_source(self)], self.batch, self.reference_weights.device)

    @property
    def batch(self) -> int:
        return len(self.sees_reference)


def as_source(step: VideoStep, name: str = SOURCE_NAME, threshold: float = 0.0) -> Source:
    """The step's cached reference as one :class:`~customvideox_core.reference_sources.Source` (one frame,
    one bias term: the step's entity words)."""
    weights = step.reference_weights.to(torch.float32)
    kept = None
    if step.kept is not None:
        kept = torch.zeros(weights.shape[0], dtype=torch.bool, device=weights.device)
        kept[step.kept.to(weights.device)] = True
    return Source(
        name=name,
        tokens=weights.shape[0],
        frame_tokens=max(weights.shape[0], 1),
        cached=True,
        sees=step.sees_reference,
        tab=step.tab_per_row,
        weights=weights,
        kept=kept,
        terms=((step.entity_positions, (0,)),),
        gamma=step.gamma,
        threshold=threshold,
        erae_rows=step.erae_rows,
    )


def plan_video_step(
    *,
    row_is_cond: Sequence[bool],
    row_sees_reference: Sequence[bool],
    tab_value: float,
    reference_weights: Tensor,
    erae: ERAEConfig | None,
    device: torch.device | str | None = None,
) -> VideoStep:
    """The :class:`VideoStep` of one call. Per batch row: ``row_is_cond`` (positive prompt: ERAE acts
    there only) and ``row_sees_reference`` (its queries see the reference keys); ``reference_weights``
    ``[Lr]``; ``device``: where the attention runs (default: the weights' device)."""
    cond = tuple(bool(flag) for flag in row_is_cond)
    weights = reference_weights.reshape(-1).to(device=device, dtype=torch.float32)
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
    lse_kernel: LseKernel | None = None,
    scale: float | None = None,
) -> Tensor:
    """Video self-attention with the reference appended to the keys.

    query/key/value ``[B, Lv, (H D)]`` (video tokens, RoPE applied); reference_key/value ``[1, Lr, (H D)]``;
    ``activation`` ``[B, Lv]`` entity activation (ERAE) or None. Returns ``[B, Lv, (H D)]``.
    ``attention_fn`` (the user's backend) gets ``[b, H, Lq, D']`` tensors, never a mask, and applies
    ``1 / sqrt(D')``; ``lse_kernel``: an LSE kernel known to run on these tensors (the caller decides once
    per call), taking the ``"lse-merge"`` path for biased rows, or None for the ``"augmented"`` path.
    ``scale``: the model's softmax scale (default ``1 / sqrt(D)``).
    """
    if query.shape[0] != step.batch:
        raise ValueError(f"attention batch is {query.shape[0]} rows, the step was planned for {step.batch}.")
    if reference_key.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"reference keys are {reference_key.shape[-1]} wide, the video's {key.shape[-1]}: the cached "
            "reference was computed for another model."
        )
    layout = TokenLayout(text=0, video=query.shape[1], reference=0, frame_tokens=max(query.shape[1], 1))
    paths = BiasedPaths.of(query, heads, attention_fn, lse_kernel, scale)
    return sources_self_attention(
        query,
        key,
        value,
        layout,
        step.plan,
        paths,
        cached={SOURCE_NAME: (reference_key, reference_value)},
        activation=None if activation is None else activation[..., None],
    )
