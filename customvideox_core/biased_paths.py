"""The two exact paths of attention over many plain keys plus a few reference keys with a low-rank bias.

Every reference source of the pack runs through :class:`BiasedPaths` (:mod:`.reference_sources`:
``[text | video]`` keys plus the kept keys of the sources a row sees, in the sequence or cached). Each query ``i``
attends to the many keys without a bias and to the reference keys ``j`` with::

    logit(i, j) = scale · q_i · k_j + Σ_k c_i^k m_j^k

``c`` the query factors ``"b Lq K"``, ``m`` the key factors ``"1 r K"`` (docs/ARCHITECTURE.md, "The bias").
The paths (:data:`PATHS`), both exact:

- ``"lse-merge"`` (with an :class:`~customvideox_core.lse_attention.LseKernel`): unbiased attention over
  the many keys at the native head dim, plus the biased attention over the few reference keys, merged
  exactly with the two log-sum-exps. The small part takes the bias as an additive ``Lq × r`` float32
  mask where its kernel accepts one (PyTorch's on the CPU) and the mask is no larger than the query, else
  as extra head dims of this small part only. A kernel that walks keys in blocks (PyTorch's on the CPU)
  runs whole blocks of the many keys; a short last block joins the small part with a zero bias. With a
  quantizing kernel (sage: int8 q and k per block) the small part runs on PyTorch's fused kernel, so the
  bias is never quantized and the many keys keep the user's kernel at its native head dim;
- ``"augmented"`` (any plain backend): one call over all keys with the bias factors appended as extra
  head dims (:func:`customvideox_core.attention.augmented_call`).

The one reference attention of the pack (:mod:`.reference_sources`, behind the pack's own reference
attention and Stand-In's) runs its biased rows here; what it plans once per model call is a
:class:`RowPlan` (the batch rows that do and do not see a reference as :class:`RowGroup` s, the kept
reference keys, the key side of the bias).

Whether the LSE kernel runs on the tensors is decided once per attention call, by the caller
(``BiasedPaths.lse_kernel`` is a kernel known to run, or None); nothing here reads back to the host.
Token tensors arrive in the host's layout ``"b L (H D)"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .attention import AttentionFn, augment, augmented_call, augmented_head_dim, scaled_attention, zero_padded
from .lse_attention import LSE_KERNELS, LseKernel, merge_partial_attention, whole_block_keys

PATHS = ("lse-merge", "augmented")
"""The two exact paths for queries that see a biased reference."""


@dataclass(frozen=True)
class BiasedPaths:
    """One attention call's backends: ``attention_fn`` (the user's, ``"b H L D"``, scale ``1 / sqrt(D)``)
    and ``lse_kernel`` (an LSE kernel known to run on this call's tensors, or None: the augmented path);
    ``scale`` the model's softmax scale."""

    heads: int
    scale: float
    attention_fn: AttentionFn
    lse_kernel: LseKernel | None

    @classmethod
    def of(
        cls,
        query: Tensor,
        heads: int,
        attention_fn: AttentionFn,
        lse_kernel: LseKernel | None,
        scale: float | None,
    ) -> BiasedPaths:
        """The paths of one call on ``query`` "b L (H D)"; ``scale`` None: the default ``1 / sqrt(D)``."""
        scale = 1.0 / math.sqrt(query.shape[-1] // heads) if scale is None else scale
        return cls(heads, scale, attention_fn, lse_kernel)

    def split(self, tokens: Tensor) -> Tensor:
        return split_heads(tokens, self.heads)

    def attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """The user's backend at the model's scale, no bias; "b L (H D)" in, "b H Lq D" out."""
        return scaled_attention(
            self.split(query), self.split(key), self.split(value), self.scale, self.attention_fn
        )

    def biased(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        reference_key: Tensor,
        reference_value: Tensor,
        query_factors: Tensor,
        key_factors: Tensor,
    ) -> Tensor:
        """Attention of ``query`` over ``[key | reference_key]`` with the bias on the reference keys.

        query "b Lq (H D)", key/value "b n (H D)" (the many keys), reference key/value "b r (H D)",
        query_factors "b Lq K", key_factors "1 r K" (float32, float64 for float64 tokens). "b H Lq D" out.
        """
        path = self.lse_merge if self.lse_kernel is not None else self.augmented
        return path(query, key, value, reference_key, reference_value, query_factors, key_factors)

    def lse_merge(
        self, query, key, value, reference_key, reference_value, query_factors, key_factors
    ) -> Tensor:
        """Native-head-dim attention over the many keys merged exactly with the biased attention over
        the reference keys (:meth:`reference_part`); arguments as :meth:`biased`, "b H Lq D" out.

        A kernel that walks keys in blocks gets whole blocks only: the last few of the many keys then
        join the reference part with a zero bias (:func:`whole_block_keys`).
        """
        assert self.lse_kernel is not None
        main = whole_block_keys(key.shape[1], self.lse_kernel.block_on(query))
        if main < key.shape[1]:
            reference_key = torch.cat([key[:, main:], reference_key], dim=1)
            reference_value = torch.cat([value[:, main:], reference_value], dim=1)
            moved = key_factors.new_zeros(1, key.shape[1] - main, key_factors.shape[-1])
            key_factors = torch.cat([moved, key_factors], dim=1)
            key, value = key[:, :main], value[:, :main]
        query4 = self.split(query)
        out_main, lse_main = self.lse_kernel.run(query4, self.split(key), self.split(value), self.scale)
        out_reference, lse_reference = self.reference_part(
            query4, self.split(reference_key), self.split(reference_value), query_factors, key_factors
        )
        return merge_partial_attention(out_main, lse_main, out_reference, lse_reference)

    def reference_part(
        self, query4: Tensor, reference_key4: Tensor, reference_value4: Tensor, query_factors, key_factors
    ) -> tuple[Tensor, Tensor]:
        """Biased attention of every query over the reference keys, with its log-sum-exp.

        query4 "b H Lq D", reference key/value "b H r D", query_factors "b Lq K", key_factors "1 r K".
        Where a kernel takes an additive bias (PyTorch's on the CPU) and the ``Lq × r`` bias is no
        larger than the query, the bias ``query_factors @ key_factorsᵀ`` is that mask ("b 1 Lq r",
        float32) and the keys keep the native head dim. Otherwise the bias factors ride as extra head
        dims. A quantizing kernel never gets the bias: PyTorch's kernel runs this part instead.
        Returns (out "b H Lq D", lse "b H Lq").
        """
        assert self.lse_kernel is not None
        kernel = LSE_KERNELS["torch"] if self.lse_kernel.quantized else self.lse_kernel
        if kernel.takes_bias(query4) and _bias_fits(query4, query_factors, key_factors):
            assert kernel.run_biased is not None
            bias = torch.matmul(query_factors, key_factors.transpose(-1, -2)).unsqueeze(1)
            return kernel.run_biased(query4, reference_key4, reference_value4, self.scale, bias)
        head_dim, rank = query4.shape[-1], key_factors.shape[-1]
        padded = kernel.padded_head_dim(head_dim + rank)
        if padded is None:  # no native head dim of the kernel fits: PyTorch's runs this small part
            kernel, padded = LSE_KERNELS["torch"], augmented_head_dim(head_dim, rank)
        factor_scale = self.scale**-0.5  # (c · s)(m · s) · scale = c · m
        ref_query = augment(query4, (query_factors * factor_scale)[:, None], padded)
        ref_key = augment(reference_key4, (key_factors * factor_scale)[:, None], padded)
        out, lse = kernel.run(ref_query, ref_key, zero_padded(reference_value4, padded), self.scale)
        return out[..., :head_dim], lse

    def augmented(
        self, query, key, value, reference_key, reference_value, query_factors, key_factors
    ) -> Tensor:
        """One backend call over all keys with the bias factors as extra head dims; as :meth:`biased`."""
        query4 = self.split(query)
        padded = augmented_head_dim(query4.shape[-1], key_factors.shape[-1])
        key_factors = torch.cat(
            [key_factors.new_zeros(1, key.shape[1], key_factors.shape[-1]), key_factors], dim=1
        )
        factor_scale = padded**0.25  # backend scale 1/sqrt(D'): (c · s)(m · s) / sqrt(D') = c · m
        return augmented_call(
            query4,
            self.split(torch.cat([key, reference_key], dim=1)),
            self.split(torch.cat([value, reference_value], dim=1)),
            (query_factors * factor_scale)[:, None],
            (key_factors * factor_scale)[:, None],
            padded,
            self.scale * math.sqrt(padded),
            self.attention_fn,
        )


def biased_rows_path(plan: RowPlan, usable: LseKernel | None) -> str | None:
    """The path the biased rows of a planned call take: ``"lse-merge"`` with ``usable`` (an LSE kernel
    known to run on the call's tensors), ``"augmented"`` without; None when nothing is biased or no row
    sees the reference."""
    if not plan.biased or plan.seeing is None:
        return None
    return PATHS[0] if usable is not None else PATHS[1]


@dataclass(frozen=True, eq=False)
class RowGroup:
    """Batch rows that run together: ``rows`` (host ints) and how to take them (a slice when contiguous)."""

    rows: tuple[int, ...]
    index: slice | Tensor

    @classmethod
    def of(cls, rows: Sequence[int], device: torch.device) -> RowGroup | None:
        rows = tuple(rows)
        if not rows:
            return None
        if rows == tuple(range(rows[0], rows[-1] + 1)):
            return cls(rows, slice(rows[0], rows[-1] + 1))
        return cls(rows, torch.tensor(rows, dtype=torch.long, device=device))

    def take(self, tensor: Tensor) -> Tensor:
        """Rows of ``tensor`` (dim 0): a view for a slice, a copy otherwise."""
        if isinstance(self.index, slice):
            return tensor[self.index]
        return tensor.index_select(0, self.index.to(tensor.device))

    def put(self, output: Tensor, rows: Tensor) -> None:
        """Write ``rows`` into ``output`` at this group's rows."""
        if isinstance(self.index, slice):
            output[self.index] = rows
        else:
            output.index_copy_(0, self.index.to(output.device), rows)


@dataclass(frozen=True, eq=False)
class RowPlan:
    """What the reference attention plans once per model call (``reference_sources.SourcePlan`` extends
    it; the only host read-back is in building it).

    - ``seeing`` / ``blind``: row groups that do / do not see the reference (None when empty).
    - ``kept_index``: ``[kept]`` long indices into the reference tokens, None when all are kept.
    - ``key_factors``: ``[kept, K]`` float32, the key side ``m_j^k`` of the K bias terms.
    - ``biased``: some seeing row has ``b(s) != 0`` and some kept key a non-zero weight.
    """

    seeing: RowGroup | None
    blind: RowGroup | None
    kept_index: Tensor | None
    key_factors: Tensor
    biased: bool

    @property
    def kept_count(self) -> int:
        """How many reference keys are kept."""
        return self.key_factors.shape[0]


def split_heads(tokens: Tensor, heads: int) -> Tensor:
    """Heads apart, "b l (h d)" -> "b h l d", as a view (plain view ops: einops costs more per call)."""
    return tokens.unflatten(-1, (heads, -1)).transpose(1, 2)


def join_heads(tokens: Tensor) -> Tensor:
    """Heads together, "b h l d" -> "b l (h d)" (a view when the kernel wrote "b l h d" memory, as
    PyTorch's do)."""
    return tokens.transpose(1, 2).flatten(2)


def factor_dtype(tokens: Tensor) -> torch.dtype:
    """Bias factors are formed in float32, or float64 for float64 tokens."""
    return torch.promote_types(tokens.dtype, torch.float32)


def _bias_fits(query4: Tensor, query_factors: Tensor, key_factors: Tensor) -> bool:
    """True when the "b 1 Lq r" bias mask takes no more memory than the query "b H Lq D" itself."""
    batch, length, kept = query_factors.shape[0], query4.shape[2], key_factors.shape[1]
    return batch * length * kept * key_factors.element_size() <= query4.numel() * query4.element_size()
