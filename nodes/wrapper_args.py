"""The arguments a ``DIFFUSION_MODEL`` wrapper receives, and the attention calls an override receives.

- A wrapper gets the DiT's ``_forward`` arguments: ``transformer_options`` sits at the host spec's
  ``transformer_options_index`` among the positional ones, or comes as a keyword.
- An ``optimized_attention_override`` gets ``func`` (the backend the user chose) and the call's
  arguments; it runs the previous override in the chain, if any, around ``func``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

OPTIONS_KEYWORD = "transformer_options"
OVERRIDE_KEY = "optimized_attention_override"
_SPLIT_CALL_DROPS = ("heads", "skip_reshape", "skip_output_reshape", "scale")
"""Keywords a head-split backend call sets itself, or leaves to the core (which applies the model's scale)."""
REFERENCE_WRAPPER_KEY = "customvideox"
"""Key of the pack's reference wrapper installed by Apply, Sample and Load (``nodes/patch.WRAPPER_KEY``)."""
STANDIN_WRAPPER_KEY = "customvideox_standin"
"""Key of the same wrapper installed by Apply Stand-In (``nodes/standin_patch.WRAPPER_KEY``)."""
SETTINGS_KEY = "cvx_settings"
"""Where Apply/Sample keep the ``ReferencePatch`` on the model (``nodes/patch.py``)."""
STANDIN_SETTINGS_KEY = "cvx_standin"
"""Where Apply Stand-In (and a cached-layout adapter) keeps its ``StandInPatch`` on the model: a cached
source of the reference wrapper's table (``nodes/standin_patch.py``)."""
CONCAT_ID_CALL_KEY = "cvx_concat_id_wan"
"""What Concat-ID-Wan's wrapper (``nodes/concat_id_wan.py``) leaves in a call's options: state sized for
the whole batch, set by a wrapper that runs outside the reference wrapper (so a call that carries it is
never split by rows, see ``nodes/patch.RowSplit``)."""


def options_of(args: tuple, kwargs: dict, index: int) -> dict:
    """The call's ``transformer_options`` (``{}`` when it has none)."""
    options = args[index] if len(args) > index else kwargs.get(OPTIONS_KEYWORD)
    return options or {}


def with_options(args: tuple, kwargs: dict, index: int, options: dict) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with ``options`` as the call's ``transformer_options``, where it came from."""
    if len(args) > index:
        return (*args[:index], options, *args[index + 1 :]), kwargs
    return tuple(args), {**kwargs, OPTIONS_KEYWORD: options}


def chained_backend(func: Callable, previous: Callable | None) -> Callable:
    """The backend an override runs: ``previous(func, …)`` when another override was set first."""

    def backend(*args, **kwargs):
        if previous is not None:
            return previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    return backend


def plain_call(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor, int] | None:
    """``(query, key, value, heads)`` (``[B, L, (H D)]``) of an ordinary attention call, or ``None`` for
    a call an override leaves alone (heads already split, a mask, too few arguments)."""
    if len(args) < 3 or kwargs.get("skip_reshape") or kwargs.get("mask") is not None:
        return None
    query, key, value = args[:3]
    heads = args[3] if len(args) > 3 else kwargs.get("heads")
    if query.ndim != 3 or heads is None:
        return None
    return query, key, value, heads


def head_split_kernel(backend: Callable, kwargs: dict):
    """``attention_fn(q, k, v)`` on ``[b, H, L, D]`` tensors through ``backend`` at its default scale
    ``1 / sqrt(D)``, keeping the call's other keyword arguments (the caller applies the model's scale)."""
    rest = {name: value for name, value in kwargs.items() if name not in _SPLIT_CALL_DROPS}

    def attention_fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return backend(q, k, v, q.shape[1], skip_reshape=True, skip_output_reshape=True, **rest)

    return attention_fn
