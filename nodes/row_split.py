"""A model call whose rows disagree on seeing the pack's appended frames, run as two DiT calls.

The reference wrapper (:class:`~.patch.ReferenceWrapper`) runs innermost, so the two calls stay below
every other ``DIFFUSION_MODEL`` wrapper: a cache placed after Apply still sees one call per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .wrapper_args import CONCAT_ID_CALL_KEY, OPTIONS_KEYWORD, SETTINGS_KEY, with_options

_PER_CHUNK_OPTIONS = ("cond_or_uncond", "uuids")
"""``transformer_options`` lists with one entry per conditioning chunk of the batch (ComfyUI's
``calc_cond_batch``)."""
_PER_ROW_OPTIONS = ("sigmas",)
"""``transformer_options`` tensors with one entry per batch row (``calc_cond_batch`` sets ``sigmas`` to the
call's timestep). Nothing else in the options is cut: ``sample_sigmas``, for one, is the whole schedule."""


def _rows_of(value, rows: Tensor, batch: int):
    """``value`` restricted to ``rows`` when it is a tensor with one entry per batch row, else as it is."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value.index_select(0, rows.to(value.device))
    return value


@dataclass(frozen=True, eq=False)
class RowSplit:
    """A model call whose rows disagree on seeing the pack's own reference, run as two calls: the rows
    that see it with the reference frames appended, the others as the plain model — so they pay for no
    reference token in any layer (the base model's cost), not only in attention.

    Made only when every argument is a tensor or a plain value (a container such as a ControlNet's
    ``control`` dict could hold per-row tensors this cannot see), and not under Concat-ID-Wan's wrapper
    (it runs outside this one and has already sized its state for the whole batch): otherwise the call
    stays one call, in which the blind rows drop the reference keys in attention (the same result, at a
    higher cost).
    """

    seeing: Tensor
    blind: Tensor
    args: tuple
    kwargs: dict
    options: dict
    options_index: int

    @classmethod
    def of(
        cls, sees: Sequence[bool], args: tuple, kwargs: dict, options: dict, options_index: int
    ) -> RowSplit | None:
        if all(sees) or not any(sees) or CONCAT_ID_CALL_KEY in options:
            return None
        plain = (Tensor, int, float, str, bool, type(None))
        others = [a for i, a in enumerate(args) if i != options_index]
        others += [v for k, v in kwargs.items() if k != OPTIONS_KEYWORD]
        if not all(isinstance(value, plain) for value in others):
            return None
        seeing = torch.tensor([row for row, flag in enumerate(sees) if flag])
        blind = torch.tensor([row for row, flag in enumerate(sees) if not flag])
        return cls(seeing, blind, tuple(args), dict(kwargs), options, options_index)

    def _call_args(self, rows: Tensor, *, patched: bool) -> tuple[tuple, dict]:
        """The call's arguments for ``rows`` (whole conditioning chunks, as roles are per chunk); without
        the reference patch unless ``patched``."""
        batch = self.args[0].shape[0]
        chunks = self.options.get("cond_or_uncond") or [0]
        per_chunk = batch // len(chunks)
        kept_chunks = sorted({int(row) // per_chunk for row in rows})
        options = {name: value for name, value in self.options.items() if patched or name != SETTINGS_KEY}
        for name in _PER_ROW_OPTIONS:
            if name in options:
                options[name] = _rows_of(options[name], rows, batch)
        for name in _PER_CHUNK_OPTIONS:
            listed = self.options.get(name)
            if isinstance(listed, list) and len(listed) == len(chunks):
                options[name] = [listed[chunk] for chunk in kept_chunks]
        args = tuple(_rows_of(value, rows, batch) for value in self.args)
        kwargs = {name: _rows_of(value, rows, batch) for name, value in self.kwargs.items()}
        return with_options(args, kwargs, self.options_index, options)

    def run(self, executor, wrapper: Callable) -> Tensor:
        """Both calls through ``wrapper`` (the reference wrapper), their rows put back in the batch's order.
        ``[B, C, T, H, W]``."""
        args, kwargs = self._call_args(self.seeing, patched=True)
        seen = wrapper(executor, *args, **kwargs)
        args, kwargs = self._call_args(self.blind, patched=False)
        unseen = wrapper(executor, *args, **kwargs)  # other sources (Stand-In) may still act on them
        out = seen.new_empty((self.args[0].shape[0], *seen.shape[1:]))
        out[self.seeing.to(out.device)] = seen
        out[self.blind.to(out.device)] = unseen
        return out
