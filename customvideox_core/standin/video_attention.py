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
bias, the TAB value of each row) is built once per model call in the step's :class:`VideoPlan`; an
attention call reads nothing back to the host.

Tensors arrive in the host's layout ``[B, L, (H D)]`` and leave in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..attention import AttentionFn
from ..biased_paths import BiasedPaths, biased_rows_path, factor_dtype, join_heads
from ..erae import ERAEConfig
from ..lse_attention import LseKernel
from ..reference_attention import RowGroup


@dataclass(frozen=True, eq=False)
class VideoPlan:
    """The layer-independent part of one model call, derived once from a :class:`VideoStep`.

    - ``seeing`` / ``blind``: row groups that do / do not see the reference (None when empty).
    - ``kept_index``: ``[kept]`` long indices into the reference tokens, None when all are kept.
    - ``key_factors``: ``[kept, 1]`` float32, the key side ``m_j`` of the bias.
    - ``tab_per_row``: ``[B]`` float64, ``b(s)`` of each row (cast to the factors' dtype per call).
    - ``erae_rows``: ``[B]`` bool, rows whose entity activation counts (the positive prompt).
    - ``biased``: some seeing row has ``b(s) != 0`` and some kept key a non-zero weight.
    """

    seeing: RowGroup | None
    blind: RowGroup | None
    kept_index: Tensor | None
    key_factors: Tensor
    tab_per_row: Tensor
    erae_rows: Tensor
    biased: bool


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

    ``plan`` (derived on construction, the only host read-back of the call) holds the row groups, the
    kept indices and the factors of the bias.
    """

    sees_reference: tuple[bool, ...]
    tab_per_row: tuple[float, ...]
    reference_weights: Tensor
    kept: Tensor | None
    gamma: float
    erae_rows: tuple[bool, ...]
    entity_positions: tuple[int, ...] = ()
    plan: VideoPlan = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.tab_per_row) != self.batch or len(self.erae_rows) != self.batch:
            raise ValueError(
                f"{self.batch} rows see/do not see the reference but there are {len(self.tab_per_row)} TAB "
                f"values and {len(self.erae_rows)} ERAE flags; expected one per row"
            )
        object.__setattr__(self, "plan", _make_plan(self))

    @property
    def batch(self) -> int:
        return len(self.sees_reference)

    @property
    def uses_bias(self) -> bool:
        return any(
            tab != 0.0 for tab, sees in zip(self.tab_per_row, self.sees_reference, strict=True) if sees
        )


def _make_plan(step: VideoStep) -> VideoPlan:
    device = step.reference_weights.device
    weights = step.reference_weights.to(torch.float32)
    if step.kept is not None:
        weights = weights.index_select(0, step.kept.to(device))
    seeing = [row for row, sees in enumerate(step.sees_reference) if sees]
    has_weight = weights.shape[0] > 0 and bool((weights != 0).any())
    return VideoPlan(
        seeing=RowGroup.of(seeing, device),
        blind=RowGroup.of([row for row, sees in enumerate(step.sees_reference) if not sees], device),
        kept_index=None if step.kept is None else step.kept.to(device),
        key_factors=weights[:, None],
        tab_per_row=torch.tensor(step.tab_per_row, dtype=torch.float64, device=device),
        erae_rows=torch.tensor(step.erae_rows, dtype=torch.bool, device=device),
        biased=has_weight and any(step.tab_per_row[row] != 0.0 for row in seeing),
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
    if len(row_sees_reference) != len(cond):
        raise ValueError(f"{len(row_sees_reference)} reference flags for {len(cond)} rows")
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


def path_of(step: VideoStep, usable: LseKernel | None) -> str | None:
    """The path the biased rows of ``step`` take with ``usable`` (an LSE kernel known to run on the call's
    tensors, or None), None when nothing is biased."""
    return biased_rows_path(step.plan.biased, step.plan.seeing, usable)


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
    scale = 1.0 / math.sqrt(query.shape[-1] // heads) if scale is None else scale
    call = _VideoCall(step, BiasedPaths(heads, scale, attention_fn, lse_kernel))
    plan = step.plan
    if plan.seeing is None:
        return join_heads(call.paths.attend(query, key, value))
    if plan.blind is None:
        return call.seeing(query, key, value, reference_key, reference_value, activation)
    output = query.new_empty(query.shape)
    blind = plan.blind
    plan.blind.put(
        output, join_heads(call.paths.attend(blind.take(query), blind.take(key), blind.take(value)))
    )
    seeing = plan.seeing
    plan.seeing.put(
        output,
        call.seeing(
            seeing.take(query),
            seeing.take(key),
            seeing.take(value),
            reference_key,
            reference_value,
            None if activation is None else seeing.take(activation),
            rows=seeing,
        ),
    )
    return output


@dataclass(frozen=True)
class _VideoCall:
    step: VideoStep
    paths: BiasedPaths

    def seeing(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        reference_key: Tensor,
        reference_value: Tensor,
        activation: Tensor | None,
        rows: RowGroup | None = None,
    ) -> Tensor:
        """Rows that see the reference (query/key/value "b Lv (H D)"): ``[video | kept reference]`` keys,
        the bias on the reference keys. "b Lv (H D)" out."""
        plan = self.step.plan
        count = query.shape[0]
        reference_key = reference_key.to(device=key.device, dtype=key.dtype)
        reference_value = reference_value.to(device=value.device, dtype=value.dtype)
        if plan.kept_index is not None:
            index = plan.kept_index.to(key.device)
            reference_key = reference_key.index_select(1, index)
            reference_value = reference_value.index_select(1, index)
        reference_key = reference_key.expand(count, -1, -1)
        reference_value = reference_value.expand(count, -1, -1)
        if not plan.biased:
            full_key = torch.cat([key, reference_key], dim=1)
            full_value = torch.cat([value, reference_value], dim=1)
            return join_heads(self.paths.attend(query, full_key, full_value))
        key_factors = plan.key_factors.to(key.device, factor_dtype(key))[None]  # "1 kept 1"
        out = self.paths.biased(
            query,
            key,
            value,
            reference_key,
            reference_value,
            self.query_factors(query, activation, rows),
            key_factors,
        )
        return join_heads(out)

    def query_factors(self, query: Tensor, activation: Tensor | None, rows: RowGroup | None) -> Tensor:
        """``[b, Lv, 1]`` (float32, float64 for float64 tokens): ``b(s) (1 + γ a_i)``, ``a_i`` counted on
        ERAE rows only."""
        plan, gamma = self.step.plan, self.step.gamma
        dtype = factor_dtype(query)
        tab = plan.tab_per_row.to(query.device, dtype)
        erae_rows = plan.erae_rows.to(query.device)
        if rows is not None:
            tab, erae_rows = rows.take(tab), rows.take(erae_rows)
        factors = tab[:, None].expand(query.shape[0], query.shape[1])
        if activation is not None and gamma != 0.0:
            factors = factors * (1.0 + gamma * (activation.to(dtype) * erae_rows[:, None]))
        return factors[..., None]
