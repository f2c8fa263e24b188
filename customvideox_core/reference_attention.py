"""3D reference attention for one host attention call, host-free.

The node glue hands every self-attention call of the host DiT to :func:`reference_self_attention`
together with a :class:`ReferenceStep` (what is true for the whole model call: where the tokens sit,
the TAB value of each batch row, the reference token weights, which rows see the reference). Everything
that does not depend on the layer (row groups, kept reference keys, the key side of the bias) is built
once per model call when the step is made: the step is one in-sequence source of the table of reference
sources (:func:`as_source`), planned and run by :mod:`customvideox_core.reference_sources`, the one
reference attention of the pack; an attention call reads nothing back to the host.

Who attends to what, per batch row (``n = text + video``, ``kept`` = reference keys not dropped):

- a row that sees the reference: every query attends to ``[text | video | kept reference]``; video
  queries carry the bias ``b(s) · Σ_k (1 + γ a_i^k) m_j^k`` on the kept reference keys (docs/ARCHITECTURE.md, "The bias");
- a row that does not see the reference: text and video queries attend to ``[text | video]`` only,
  exactly the base model's attention at its cost; each reference query returns its own value (attention
  over itself alone) — finite, and discarded by the wrapper;
- reference keys outside the subject mask (``block_outside_mask``) are sliced out for every query.

The biased rows run one of the two exact paths of :mod:`customvideox_core.biased_paths` (``PATHS`` there),
with ``[text | video]`` as the many keys and the kept reference keys as the biased ones:
``"lse-merge"`` when the caller hands an :class:`~customvideox_core.lse_attention.LseKernel` that runs on
the call's tensors (native head dim over the many keys, merged exactly by log-sum-exp with the small biased
part), ``"augmented"`` otherwise (the bias factors as extra head dims of one backend call).

Tensors arrive in the host's attention layout ``[B, L, (H D)]`` and leave in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .attention import AttentionFn
from .biased_paths import BiasedPaths
from .clock import ClockSpan
from .erae import ERAEConfig
from .layout import TokenLayout
from .lse_attention import LseKernel
from .reference_sources import (
    Source,
    SourcePlan,
    plan_sources,
    sequence_activation,
    sources_activation,
    sources_self_attention,
)
from .tab import TABSchedule

StepPlan = SourcePlan
"""The plan of a :class:`ReferenceStep`: a :class:`~customvideox_core.reference_sources.SourcePlan` of its
one in-sequence source."""


if TYPE_CHECKING:  # typing's Unpack and NotRequired arrive with Python 3.11; annotations only
    from typing import NotRequired, TypedDict, Unpack

    class PlanArguments(TypedDict):
        """What :func:`plan_step` and :func:`plan_source` take besides the layout (documented at
        :func:`plan_step`)."""

        tab: TABSchedule
        progress: float | ClockSpan
        row_sees_reference: Sequence[bool]
        row_has_entities: Sequence[bool]
        reference_weights: Tensor
        erae: ERAEConfig | None
        row_biased: NotRequired[Sequence[bool] | Tensor | None]


@dataclass(frozen=True)
class HostRows:
    """What the host already knows of each batch row when it plans a step, so that planning reads nothing
    back from the device: whether the row sees the reference, whether its prompt holds the entity words,
    and its TAB value ``b(s)`` (for a row whose bias is switched on the device, the value it has when
    switched on)."""

    sees: tuple[bool, ...]
    entities: tuple[bool, ...]
    tab_values: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class ReferenceStep:
    """What the attention override needs for one model call (one denoising evaluation).

    - ``layout``: where text, video and reference tokens sit in the self-attention sequence.
    - ``tab_per_row``: ``[B]`` TAB value ``b(s)`` for each batch row.
    - ``reference_weights``: ``[1, reference]`` region weights ``m_j`` in ``[0, 1]``.
    - ``row_sees_reference``: ``[B]`` bool, rows whose queries may attend to the reference.
    - ``kept_reference``: ``[reference]`` bool, reference keys kept (the others are dropped for every
      query), or ``None`` when all are kept.
    - ``erae``: ERAE settings, or ``None`` for no entity enhancement.
    - ``erae_rows``: ``[B]`` bool, rows whose prompt holds the entity words.
    - ``host_rows``: the same per-row facts as the host knows them (:func:`plan_step` gives them), or
      ``None``: planning then reads them back from the tensors above.
    - ``row_scale``: ``[B]`` float32 multiplier of ``b(s)`` kept on the device (a row switched off there
      gets 0; ``tab_per_row`` already holds the product), or ``None``. Used with ``host_rows`` only.

    ``plan`` (made on first use) holds the row groups, the kept indices and the key side of the bias;
    the reference weights are the only tensor it reads back (the subject masks, once per call).
    """

    layout: TokenLayout
    tab_per_row: Tensor
    reference_weights: Tensor
    row_sees_reference: Tensor
    kept_reference: Tensor | None
    erae: ERAEConfig | None
    erae_rows: Tensor
    host_rows: HostRows | None = None
    row_scale: Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.tab_per_row.shape[0]
        if self.tab_per_row.ndim != 1:
            raise ValueError(f"tab_per_row must be [B], got shape {tuple(self.tab_per_row.shape)}")
        for name in ("row_sees_reference", "erae_rows"):
            flags = getattr(self, name)
            if flags.shape != (batch,) or flags.dtype != torch.bool:
                raise ValueError(
                    f"{name} must be a [{batch}] bool tensor, got {flags.dtype} {tuple(flags.shape)}"
                )
        if self.reference_weights.shape != (1, self.layout.reference):
            raise ValueError(
                f"reference_weights must be [1, {self.layout.reference}], got {tuple(self.reference_weights.shape)}"
            )
        kept = self.kept_reference
        if kept is not None and (kept.shape != (self.layout.reference,) or kept.dtype != torch.bool):
            raise ValueError(
                f"kept_reference must be a [{self.layout.reference}] bool tensor or None, "
                f"got {kept.dtype} {tuple(kept.shape)}"
            )
        host = self.host_rows
        if host is not None and not len(host.sees) == len(host.entities) == len(host.tab_values) == batch:
            raise ValueError(f"host_rows must give one entry per batch row ({batch}) in each field")
        scale = self.row_scale
        if scale is not None and scale.shape != (batch,):
            raise ValueError(f"row_scale must be [{batch}] or None, got {tuple(scale.shape)}")

    @cached_property
    def plan(self) -> StepPlan:
        """The step's one-source :class:`SourcePlan`, made on first use: a caller that plans the step with
        other sources (the wrapper, through :func:`as_source`) never makes it."""
        return plan_sources([as_source(self)], self.batch, self.tab_per_row.device)

    @property
    def batch(self) -> int:
        return self.tab_per_row.shape[0]

    @property
    def uses_erae(self) -> bool:
        return self.plan.uses_erae


def as_source(step: ReferenceStep, name: str = "reference") -> Source:
    """The step's reference as one in-sequence :class:`~customvideox_core.reference_sources.Source`: its
    per-row facts from ``step.host_rows`` (nothing read back) when given, else from the step's tensors."""
    host = step.host_rows
    if host is None:
        host = HostRows(
            sees=tuple(step.row_sees_reference.tolist()),
            entities=tuple(step.erae_rows.tolist()),
            tab_values=tuple(float(value) for value in step.tab_per_row.tolist()),
        )
        row_scale = None
    else:
        row_scale = step.row_scale
    rows = _PlannedRows(host, step.reference_weights.to(torch.float32), step.kept_reference, row_scale)
    return _in_sequence_source(name, step.layout, step.erae, rows)


@dataclass(frozen=True)
class _PlannedRows:
    """What planning decides for one in-sequence reference: the per-row facts, the region weights
    ``[1, reference]`` float32, the kept keys ``[reference]`` bool (or None) and the device switch of
    each row's bias ``[B]`` (or None)."""

    rows: HostRows
    weights: Tensor
    kept: Tensor | None
    row_scale: Tensor | None


def _in_sequence_source(
    name: str, layout: TokenLayout, erae: ERAEConfig | None, planned: _PlannedRows
) -> Source:
    frames = layout.reference_frames
    if erae is not None:
        terms = erae.bias_terms(frames)
    else:
        terms = (((), tuple(range(frames))),) if frames else ()
    host = planned.rows
    return Source(
        name=name,
        tokens=layout.reference,
        frame_tokens=layout.frame_tokens,
        cached=False,
        sees=tuple(bool(flag) for flag in host.sees),
        tab=tuple(float(value) for value in host.tab_values),
        weights=planned.weights[0],
        kept=planned.kept,
        terms=tuple(terms),
        gamma=erae.gamma if erae is not None and erae.enabled and layout.video > 0 else 0.0,
        threshold=erae.threshold if erae is not None else 0.0,
        erae_rows=tuple(bool(flag) for flag in host.entities),
        row_scale=planned.row_scale,
    )


def plan_step(layout: TokenLayout, **planning: Unpack[PlanArguments]) -> ReferenceStep:
    """Build the :class:`ReferenceStep` of one model call.

    ``progress``: the :class:`ClockSpan` of the model's time the call's step covers (the TAB's mean over it
    is applied), or one point of the clock.

    ``row_sees_reference``: one flag per batch row; a row that does not see the reference runs exactly
    the plain model's attention on its text and video tokens. ``row_has_entities``: rows whose prompt
    holds the entity words (ERAE applies to them only). Both are decided by the caller per conditioning.
    Reference keys whose weight is 0 are dropped for every row when ``erae.block_outside_mask``.
    ``reference_weights``: ``[reference]`` or ``[1, reference]``. ``row_biased``: rows that get the TAB
    (and so the ERAE) term; ``None`` = every row. A row that sees the reference but is not biased
    attends to it exactly as the base model would (e.g. Phantom's all-zero "no image" reference).
    ``row_biased`` as a ``[B]`` bool tensor keeps that switch on the device (it is decided from the
    frames there): the rows are planned as biased and their ``b(s)`` is multiplied by the flag on the
    device, so a row switched off gets a bias of 0 (its plain logits) and nothing is read back.
    """
    planned = _plan_rows(layout, **planning)
    rows, device = planned.rows, planned.weights.device
    if planned.row_scale is not None:
        tab_per_row = planned.row_scale * rows.tab_values[0]
    else:
        tab_per_row = torch.tensor(rows.tab_values, dtype=torch.float32, device=device)
    return ReferenceStep(
        layout=layout,
        tab_per_row=tab_per_row,
        reference_weights=planned.weights,
        row_sees_reference=torch.tensor(rows.sees, dtype=torch.bool, device=device),
        kept_reference=planned.kept,
        erae=planning["erae"],
        erae_rows=torch.tensor(rows.entities, dtype=torch.bool, device=device),
        host_rows=rows,
        row_scale=planned.row_scale,
    )


def plan_source(name: str, layout: TokenLayout, **planning: Unpack[PlanArguments]) -> Source:
    """:func:`plan_step`'s reference as one in-sequence source named ``name``, without the step: what a
    caller that plans a whole table of sources (the wrapper) needs."""
    return _in_sequence_source(name, layout, planning["erae"], _plan_rows(layout, **planning))


def _plan_rows(
    layout: TokenLayout,
    *,
    tab: TABSchedule,
    progress: float | ClockSpan,
    row_sees_reference: Sequence[bool],
    row_has_entities: Sequence[bool],
    reference_weights: Tensor,
    erae: ERAEConfig | None,
    row_biased: Sequence[bool] | Tensor | None = None,
) -> _PlannedRows:
    """What :func:`plan_step` and :func:`plan_source` decide, checked (their docstrings)."""
    sees = [bool(flag) for flag in row_sees_reference]
    entities = [bool(flag) for flag in row_has_entities]
    if len(sees) != len(entities) or not sees:
        raise ValueError(
            f"row_sees_reference ({len(sees)} rows) and row_has_entities ({len(entities)} rows) must give "
            "one flag per batch row, for at least one row"
        )
    device = reference_weights.device
    weights = reference_weights.reshape(1, -1).to(torch.float32)
    if weights.shape[1] != layout.reference:
        raise ValueError(
            f"reference weights cover {weights.shape[1]} tokens but the layout has {layout.reference} "
            "reference tokens; the reference was prepared for another size"
        )
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("reference weights contain NaN or infinite values; expected numbers in [0, 1]")
    kept = weights[0] > 0.0 if erae is not None and erae.block_outside_mask else None
    span = progress if isinstance(progress, ClockSpan) else ClockSpan.point(float(progress))
    tab_value = float(tab.mean_over(span))
    row_scale = None
    if isinstance(row_biased, Tensor):
        if row_biased.shape != (len(sees),) or row_biased.dtype != torch.bool:
            raise ValueError(
                f"row_biased must be a [{len(sees)}] bool tensor, got {row_biased.dtype} {tuple(row_biased.shape)}"
            )
        tab_values = (tab_value,) * len(sees)
        row_scale = row_biased.to(device=device, dtype=torch.float32)
    else:
        biased = [True] * len(sees) if row_biased is None else [bool(flag) for flag in row_biased]
        if len(biased) != len(sees):
            raise ValueError(f"row_biased has {len(biased)} flags for {len(sees)} rows; expected one per row")
        tab_values = tuple(tab_value if flag else 0.0 for flag in biased)
    rows = HostRows(sees=tuple(sees), entities=tuple(entities), tab_values=tab_values)
    return _PlannedRows(rows, weights, kept, row_scale)


def joint_entity_activation(query: Tensor, key: Tensor, heads: int, step: ReferenceStep) -> Tensor | None:
    """Entity activations ``[B, video, K]`` from a joint ``[text | video | reference]`` attention call.

    query/key ``[B, L, (H D)]``. One column per bias term (zeros for a term without words); it is
    measured on the rows that see the reference and hold the entity words only, the other rows get 0.
    ``None`` when ERAE changes nothing this call.
    """
    if not step.uses_erae or step.layout.text == 0:
        return None
    return sequence_activation(step.plan, step.layout, query, key[:, step.layout.text_slice], heads)


def cross_entity_activation(video_queries: Tensor, text_keys: Tensor, step: ReferenceStep) -> Tensor | None:
    """Entity activations ``[B, video, K]`` from video queries ``[B, H, video, D]``, text keys ``[B, H, T, D]``."""
    return sources_activation(step.plan, video_queries, text_keys, step.layout.frame_tokens)


def check_sequence(query: Tensor, key: Tensor, layout: TokenLayout) -> None:
    """Raise when a self-attention call does not have the planned ``[text | video | reference]`` length."""
    if query.shape[1] != layout.total or key.shape[1] != layout.total:
        raise ValueError(
            f"CustomVideoX: a self-attention call has {query.shape[1]} queries / {key.shape[1]} keys but the "
            f"planned layout has {layout.total} tokens (text {layout.text} + video {layout.video} + reference "
            f"{layout.reference}). Something else changed the token sequence (for example another node "
            "appended its own reference frames); the reference bias cannot be placed, so nothing is run."
        )


def reference_self_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    heads: int,
    step: ReferenceStep,
    *,
    attention_fn: AttentionFn,
    activation: Tensor | None = None,
    lse_kernel: LseKernel | None = None,
    scale: float | None = None,
) -> Tensor:
    """Self-attention over ``[text | video | reference]`` tokens with the TAB/ERAE bias (module docstring).

    query/key/value ``[B, L, (H D)]`` with ``L == step.layout.total``; ``activation`` ``[B, video, K]``
    (entity activations, :func:`joint_entity_activation`) or ``None``. ``attention_fn`` (the user's
    backend) gets ``[B, H, L, D]`` and applies ``1 / sqrt(D)``; ``lse_kernel``: a kernel known to run on
    these tensors (the caller decides that once per call, e.g. ``nodes.attention_backends.usable_kernel``
    or :func:`~customvideox_core.lse_attention.runnable_kernel`), taking the ``"lse-merge"`` path for
    biased rows; None for the ``"augmented"`` path. ``scale``: the model's softmax
    scale (default ``1 / sqrt(D)``). Returns ``[B, L, (H D)]``.
    """
    check_sequence(query, key, step.layout)
    paths = BiasedPaths.of(query, heads, attention_fn, lse_kernel, scale)
    return sources_self_attention(query, key, value, step.layout, step.plan, paths, activation=activation)
