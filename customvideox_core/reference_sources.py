"""The table of reference sources: one plan and one attention for every reference a model call carries.

A *source* is one set of reference keys the video attends to, with its own TAB, ERAE and subject mask
(docs/ARCHITECTURE.md, "One road, a table of sources"):

- **in the sequence**: reference frames that are part of the self-attention's own tokens, after the
  video — the pack's frames appended by the wrapper (one source per Apply node), or the frames a core
  node put into the conditioning (Phantom's ``time_dim_concat``); several take consecutive spans of the
  layout's reference tokens, in the table's order;
- **cached**: keys and values computed outside the sequence, once per sampling, and appended to every
  self-attention's keys (Stand-In's reference branch, the pack's cached-layout adapters).

Each source brings one or more rank-one bias *terms* (one per ERAE subject group of its frames), so a
call's bias is ``Σ_k c_i^k m_j^k`` over the terms of every source: ``m_j^k`` is the source's mask weight
on its tokens of term ``k`` (0 elsewhere), ``c_i^k = b_s(row) (1 + γ_s a_i^k)`` on video queries (0 on
text and reference queries). Rows see each source or not (its conditioning, per source); rows are
grouped by the sources they see, and each group runs once over ``[text | video]`` plus the kept keys of
the sources it sees, biased through :class:`~customvideox_core.biased_paths.BiasedPaths` (``lse-merge``
or ``augmented``). A row that sees no source runs exactly the base model's attention.

Everything that does not depend on the layer is planned once per model call (:class:`SourcePlan`, the
only host read-back of the call). Tensors arrive in the host's layout ``[B, L, (H D)]`` and leave in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .biased_paths import BiasedPaths, RowGroup, RowPlan, factor_dtype, join_heads, split_heads
from .erae import entity_activations
from .layout import TokenLayout

NO_FLOAT64_DEVICES = frozenset({"mps"})
"""Device types without float64 tensors (Apple's MPS): the plan's per-row TAB values are float32 there."""


def plan_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype of a plan's per-row values on ``device``: float64 where the device has it."""
    return torch.float32 if torch.device(device).type in NO_FLOAT64_DEVICES else torch.float64


@dataclass(frozen=True, eq=False)
class Source:
    """One reference source of a model call.

    - ``name``: for messages (and the key of a cached source's keys and values in a call).
    - ``tokens``: its reference tokens; ``frame_tokens``: tokens per reference frame.
    - ``cached``: keys and values outside the sequence, handed to each attention call; else a span of the
      layout's reference tokens.
    - ``sees``: per batch row, whether the row attends to this source.
    - ``tab``: per batch row, ``b(s)`` (0 where the row is not biased).
    - ``weights``: ``[tokens]`` float32 ``m_j`` in ``[0, 1]``; ``kept``: ``[tokens]`` bool (keys dropped for
      every row where False) or None.
    - ``terms``: ``(entity positions, frames of this source)`` per bias term (``()`` positions: a plain
      TAB term); the terms' frames partition the source's frames.
    - ``gamma``/``threshold``: ERAE's strength and threshold for this source's terms; ``erae_rows``: per
      batch row, whether its prompt holds the entity words.
    - ``row_scale``: ``[B]`` float multiplier of ``tab`` kept on the device (rows switched on or off
      there, e.g. Phantom's all-zero frames), or None; the rows are planned with ``tab`` as given.
    """

    name: str
    tokens: int
    frame_tokens: int
    cached: bool
    sees: tuple[bool, ...]
    tab: tuple[float, ...]
    weights: Tensor
    kept: Tensor | None
    terms: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    gamma: float = 0.0
    threshold: float = 0.0
    erae_rows: tuple[bool, ...] = ()
    row_scale: Tensor | None = None

    def __post_init__(self) -> None:
        batch = len(self.sees)
        erae_rows = self.erae_rows or (False,) * batch
        object.__setattr__(self, "erae_rows", tuple(bool(flag) for flag in erae_rows))
        if len(self.tab) != batch or len(self.erae_rows) != batch:
            raise ValueError(
                f"reference source {self.name!r} has {batch} reference flags (sees), {len(self.tab)} TAB "
                f"values and {len(self.erae_rows)} ERAE flags; expected one of each per batch row"
            )
        if self.weights.shape != (self.tokens,):
            raise ValueError(
                f"reference source {self.name!r} has weights {tuple(self.weights.shape)} for "
                f"{self.tokens} tokens; expected [{self.tokens}]"
            )
        if self.kept is not None and (self.kept.shape != (self.tokens,) or self.kept.dtype != torch.bool):
            raise ValueError(
                f"kept of reference source {self.name!r} must be a [{self.tokens}] bool tensor or None, "
                f"got {self.kept.dtype} {tuple(self.kept.shape)}"
            )
        if self.row_scale is not None and self.row_scale.shape != (batch,):
            raise ValueError(
                f"row_scale of reference source {self.name!r} must be [{batch}] or None, "
                f"got {tuple(self.row_scale.shape)}"
            )


@dataclass(frozen=True, eq=False)
class SeeingGroup:
    """Rows that see the same sources: their ``rows``, the ``pool`` indices of the kept keys they see
    (into :attr:`SourcePlan.key_factors`), the in-sequence ones as indices into the layout's reference
    tokens (``in_sequence``, None when they are all of them), the cached sources they see (``cached``,
    names with their kept indices or None), and whether anything of theirs is biased."""

    rows: RowGroup | None
    pool: Tensor
    in_sequence: Tensor | None
    in_sequence_count: int
    cached: tuple[tuple[str, Tensor | None], ...]
    biased: bool
    every_key: bool
    """The group sees every in-sequence reference token and no cached source: its keys are the call's."""


@dataclass(frozen=True, eq=False)
class SourcePlan(RowPlan):
    """The layer-independent part of one model call with its table of sources: the
    :class:`~customvideox_core.biased_paths.RowPlan` (``seeing``: rows that see some source, ``blind``:
    rows that see none, ``kept_index``: kept tokens among all sources' tokens in table order — in-sequence
    first — or None, ``key_factors`` ``[kept, K]``, ``biased``) and

    - ``groups``: the :class:`SeeingGroup` s (one per set of sources seen).
    - ``term_tab``: ``[B, K]`` on the call's device, ``b(s)`` of each row for each term (times the
      source's ``row_scale`` there); float64, or float32 on a device without float64
      (:data:`NO_FLOAT64_DEVICES`).
    - ``term_gamma``/``term_threshold``: per term; ``term_erae_rows``: ``[B, K]`` bool.
    - ``term_positions``: entity positions of each term (``()`` = plain TAB term).
    - ``entity``: rows whose entity activation is measured (they see a source with ERAE and hold its words).
    - ``uses_erae``: ERAE changes something this call.
    """

    groups: tuple[SeeingGroup, ...]
    term_tab: Tensor
    term_gamma: tuple[float, ...]
    term_threshold: tuple[float, ...]
    term_erae_rows: Tensor
    term_positions: tuple[tuple[int, ...], ...]
    entity: RowGroup | None
    uses_erae: bool


def _source_columns(source: Source, weights: Tensor, kept_index: Tensor | None) -> Tensor:
    """``[kept, K_s]`` key factors of one source: its kept tokens' weights on the term of their frame."""
    frame_of_token = torch.arange(source.tokens, device=weights.device) // source.frame_tokens
    kept_weights = weights
    if kept_index is not None:
        frame_of_token = frame_of_token.index_select(0, kept_index)
        kept_weights = weights.index_select(0, kept_index)
    columns = [
        kept_weights * torch.isin(frame_of_token, torch.tensor(frames, device=weights.device))
        for _, frames in source.terms
    ]
    return torch.stack(columns or [kept_weights.new_zeros(kept_weights.shape[0])], dim=-1)


def plan_sources(sources: Sequence[Source], batch: int, device: torch.device) -> SourcePlan:
    """The :class:`SourcePlan` of one model call's ``sources`` (in-sequence ones first, in span order)."""
    sources = list(sources)
    if any(len(source.sees) != batch for source in sources):
        raise ValueError(f"every reference source must give one flag per batch row ({batch} rows)")
    in_sequence = [source for source in sources if not source.cached]
    if any(source.cached for source in sources[: len(in_sequence)]):
        raise ValueError("in-sequence reference sources come before cached ones in the table")
    column_blocks, kept_parts, spans, term_columns = [], [], [], []
    pool_start = token_start = column = 0
    any_dropped = False
    for source in sources:
        weights = source.weights.to(device=device, dtype=torch.float32)
        kept_index = None
        if source.kept is not None and not bool(source.kept.all()):
            kept_index = source.kept.to(device).nonzero().flatten()
            any_dropped = True
        local = torch.arange(source.tokens, device=device) if kept_index is None else kept_index
        block = _source_columns(source, weights, kept_index)
        count = block.shape[0]
        column_blocks.append((block, column))
        kept_parts.append(local + token_start)
        spans.append((source, torch.arange(pool_start, pool_start + count, device=device), local, kept_index))
        term_columns.append(range(column, column + block.shape[1]))
        pool_start += count
        token_start += source.tokens
        column += block.shape[1]
    key_factors = torch.zeros(pool_start, max(column, 1), device=device)
    for (block, start), (_, pool, _, _) in zip(column_blocks, spans, strict=True):
        key_factors[pool, start : start + block.shape[1]] = block

    term_tab = torch.zeros(batch, max(column, 1), dtype=torch.float64)
    term_erae = torch.zeros(batch, max(column, 1), dtype=torch.bool)
    gammas, thresholds, positions = [], [], []
    for source, columns in zip(sources, term_columns, strict=True):
        for offset, index in enumerate(columns):
            term_tab[:, index] = torch.tensor(source.tab, dtype=torch.float64)
            term_erae[:, index] = torch.tensor(source.erae_rows)
            gammas.append(source.gamma)
            thresholds.append(source.threshold)
            positions.append(tuple(source.terms[offset][0]))

    signatures: dict[tuple[bool, ...], list[int]] = {}
    for row in range(batch):
        signatures.setdefault(tuple(bool(source.sees[row]) for source in sources), []).append(row)
    blind = signatures.pop((False,) * len(sources), [])
    groups = []
    in_sequence_tokens = sum(source.tokens for source in in_sequence)
    offsets, start = [], 0
    for source in sources:
        offsets.append(start if not source.cached else None)
        start += 0 if source.cached else source.tokens
    for signature, rows in signatures.items():
        seen = [index for index, flag in enumerate(signature) if flag]
        pool = torch.cat([spans[index][1] for index in seen])
        in_seq = [spans[index][2] + offsets[index] for index in seen if not sources[index].cached]
        in_seq_index = torch.cat(in_seq) if in_seq else torch.zeros(0, dtype=torch.long, device=device)
        cached_seen = tuple((sources[index].name, spans[index][3]) for index in seen if sources[index].cached)
        sees_all = in_seq_index.numel() == in_sequence_tokens and not cached_seen
        seen_columns = [column for index in seen for column in term_columns[index]]
        weights_seen = key_factors.index_select(0, pool)
        biased = bool((weights_seen != 0).any()) and any(
            term_tab[row, column] != 0.0 for row in rows for column in seen_columns
        )
        groups.append(
            SeeingGroup(
                rows=None if len(rows) == batch else RowGroup.of(rows, device),
                pool=pool,
                in_sequence=None if sees_all else in_seq_index,
                in_sequence_count=int(in_seq_index.numel()),
                cached=cached_seen,
                biased=biased,
                every_key=sees_all,
            )
        )
    seeing_rows = sorted(row for group in groups for row in (group.rows.rows if group.rows else range(batch)))
    entity_rows = [
        row
        for row in seeing_rows
        if any(
            source.sees[row]
            and source.erae_rows[row]
            and source.gamma != 0.0
            and any(p for p, _ in source.terms)
            for source in sources
        )
    ]
    biased_any = any(group.biased for group in groups)
    kept_all = torch.cat(kept_parts) if kept_parts else torch.zeros(0, dtype=torch.long, device=device)
    term_tab_device = term_tab.to(device=device, dtype=plan_dtype(device))
    for source, columns in zip(sources, term_columns, strict=True):
        if source.row_scale is not None and len(columns):
            scale = source.row_scale.to(device=device, dtype=term_tab_device.dtype)
            term_tab_device[:, columns.start : columns.stop] *= scale[:, None]
    return SourcePlan(
        seeing=RowGroup.of(seeing_rows, device),
        blind=RowGroup.of(blind, device),
        kept_index=kept_all if any_dropped else None,
        key_factors=key_factors,
        biased=biased_any,
        groups=tuple(groups),
        term_tab=term_tab_device,
        term_gamma=tuple(gammas),
        term_threshold=tuple(thresholds),
        term_erae_rows=term_erae.to(device),
        term_positions=tuple(positions),
        entity=RowGroup.of(entity_rows, device),
        uses_erae=biased_any and bool(entity_rows),
    )


def sources_activation(
    plan: SourcePlan, video_queries: Tensor, text_keys: Tensor, frame_tokens: int
) -> Tensor | None:
    """Entity activations ``[B, video, K]`` (one column per term, zeros for a term without words) from
    video queries ``[B, H, video, D]`` and text keys ``[B or 1, H, T, D]``, measured on ``plan.entity``
    rows only (the others get 0); None when ERAE changes nothing this call."""
    if not plan.uses_erae or plan.entity is None:
        return None
    rows = plan.entity
    queries = rows.take(video_queries)
    keys = rows.take(text_keys) if text_keys.shape[0] == video_queries.shape[0] else text_keys
    columns = []
    for threshold in sorted(set(plan.term_threshold)):
        groups = [
            positions if plan.term_threshold[index] == threshold else ()
            for index, positions in enumerate(plan.term_positions)
        ]
        columns.append((threshold, entity_activations(queries, keys, groups, frame_tokens=frame_tokens,
                                                       threshold=threshold)))  # fmt: skip
    activation = columns[0][1]
    for threshold, more in columns[1:]:
        chosen = torch.tensor([t == threshold for t in plan.term_threshold], device=more.device)
        activation = torch.where(chosen, more, activation)
    batch = plan.term_tab.shape[0]
    if len(rows.rows) == batch:
        return activation
    full = activation.new_zeros(batch, *activation.shape[1:])
    rows.put(full, activation)
    return full


def sequence_activation(
    plan: SourcePlan, layout: TokenLayout, query: Tensor, text_keys: Tensor, heads: int
) -> Tensor | None:
    """Entity activations ``[B, video, K]`` (:func:`sources_activation`) of one attention call: its queries
    ``[B, L, (H D)]`` over ``layout`` (the video ones are read) against text keys ``[B or 1, T, (H D)]`` (a
    joint attention's text part, or a cross-attention's keys)."""
    return sources_activation(
        plan,
        split_heads(query[:, layout.video_slice], heads),
        split_heads(text_keys, heads),
        layout.frame_tokens,
    )


def sources_self_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    layout: TokenLayout,
    plan: SourcePlan,
    paths: BiasedPaths,
    *,
    cached: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    activation: Tensor | None = None,
) -> Tensor:
    """Self-attention over the layout's ``[text | video | in-sequence reference]`` tokens plus the cached
    sources' keys, with every source's bias (module docstring).

    query/key/value ``[B, L, (H D)]``, ``L == layout.total``; ``cached``: name → (keys, values)
    ``[1, tokens, (H D)]`` of each cached source (in the cache's device and dtype); ``activation``
    ``[B, video, K]`` or None. Returns ``[B, L, (H D)]``.
    """
    batch = plan.term_tab.shape[0]
    if query.shape[0] != batch:
        raise ValueError(f"attention batch is {query.shape[0]} rows, the step was planned for {batch}")
    call = _SourcesCall(layout, plan, paths, cached or {})
    output = None
    if plan.blind is not None:
        if not plan.groups:
            return call.blind(query, key, value)
        output = query.new_empty(query.shape)
        rows = plan.blind
        rows.put(output, call.blind(rows.take(query), rows.take(key), rows.take(value)))
    for group in plan.groups:
        if group.rows is None:
            return call.seeing(query, key, value, activation, group)
        if output is None:
            output = query.new_empty(query.shape)
        rows = group.rows
        taken = None if activation is None else rows.take(activation)
        rows.put(output, call.seeing(rows.take(query), rows.take(key), rows.take(value), taken, group))
    return output


@dataclass(frozen=True)
class _SourcesCall:
    layout: TokenLayout
    plan: SourcePlan
    paths: BiasedPaths
    cached: Mapping[str, tuple[Tensor, Tensor]]

    def blind(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """Rows that see no source: the base model's attention on ``[text | video]``; each in-sequence
        reference query returns its own value (finite, discarded by the wrapper)."""
        context = self.layout.context_slice
        if self.layout.reference == 0:
            return join_heads(self.paths.attend(query, key, value))
        main = join_heads(self.paths.attend(query[:, context], key[:, context], value[:, context]))
        own = value[:, self.layout.reference_slice]
        return torch.cat([own, main] if self.layout.reference_first else [main, own], dim=1)

    def seeing(
        self, query: Tensor, key: Tensor, value: Tensor, activation: Tensor | None, group: SeeingGroup
    ) -> Tensor:
        """Rows of one group: ``[text | video | kept keys of the sources they see]``, biased on those."""
        context, reference = self.layout.context_slice, self.layout.reference_slice
        reference_key, reference_value = key[:, reference], value[:, reference]
        if group.in_sequence is not None:
            index = group.in_sequence.to(key.device)
            reference_key, reference_value = (
                reference_key.index_select(1, index),
                reference_value.index_select(1, index),
            )
        keys, values = [reference_key], [reference_value]
        for name, kept in group.cached:
            cached_key, cached_value = self.cached[name]
            if kept is not None:
                index = kept.to(cached_key.device)
                cached_key, cached_value = (
                    cached_key.index_select(1, index),
                    cached_value.index_select(1, index),
                )
            count = query.shape[0]
            keys.append(cached_key.to(device=key.device, dtype=key.dtype).expand(count, -1, -1))
            values.append(cached_value.to(device=value.device, dtype=value.dtype).expand(count, -1, -1))
        reference_key = torch.cat(keys, dim=1) if len(keys) > 1 else keys[0]
        reference_value = torch.cat(values, dim=1) if len(values) > 1 else values[0]
        if not group.biased:
            joined = (key, value) if group.every_key else (
                torch.cat([key[:, context], reference_key], dim=1),
                torch.cat([value[:, context], reference_value], dim=1),
            )  # fmt: skip
            return join_heads(self.paths.attend(query, *joined))
        key_factors = self.plan.key_factors.index_select(0, group.pool.to(self.plan.key_factors.device))
        key_factors = key_factors.to(key.device, factor_dtype(key))[None]
        return join_heads(
            self.paths.biased(
                query,
                key[:, context],
                value[:, context],
                reference_key,
                reference_value,
                self.query_factors(query, activation, group),
                key_factors,
            )
        )

    def query_factors(self, query: Tensor, activation: Tensor | None, group: SeeingGroup) -> Tensor:
        """``[b, L, K]``: ``b_s(row) (1 + γ_s a_i^k)`` on video queries (``a`` on the source's ERAE rows
        only), 0 on text and reference queries."""
        layout, plan = self.layout, self.plan
        dtype = factor_dtype(query)
        tab = plan.term_tab.to(query.device, dtype)
        erae_rows = plan.term_erae_rows.to(query.device)
        if group.rows is not None:
            tab, erae_rows = group.rows.take(tab), group.rows.take(erae_rows)
        factors = query.new_zeros(query.shape[0], query.shape[1], tab.shape[-1], dtype=dtype)
        video = factors[:, layout.video_slice]
        if activation is not None:
            gamma = torch.tensor(plan.term_gamma, device=query.device, dtype=dtype)
            gained = activation.to(dtype) * (gamma * erae_rows.to(dtype))[:, None, :]
            video.copy_(gained).add_(1.0).mul_(tab[:, None, :])
        else:
            video.copy_(tab[:, None, :].expand_as(video))
        return factors
