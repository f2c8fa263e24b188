"""The attention half of the CustomVideoX patch: the ``optimized_attention_override``.

The ``DIFFUSION_MODEL`` wrapper in :mod:`.patch` plans one :class:`CallRuntime` per model call and puts
:func:`reference_attention_override` into that call's ``transformer_options``. ComfyUI then hands every
attention call of the DiT to it, with ``func`` the backend the user chose; the override biases the
self-attention over ``[text | video | reference]`` tokens and passes every other call through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..customvideox_core.biased_paths import split_heads
from ..customvideox_core.host_specs import EntitySource
from ..customvideox_core.reference_attention import (
    ReferenceStep,
    check_sequence,
    cross_entity_activation,
    joint_entity_activation,
    reference_self_attention,
)
from .attention_backends import core_backend
from .wrapper_args import OPTIONS_KEYWORD, chained_backend, plain_call

RUNTIME_KEY = "cvx_runtime"


@dataclass(eq=False)
class CallRuntime:
    """Per-model-call state, created by the wrapper and dropped when the call returns."""

    entity_source: EntitySource
    """Where ERAE reads the entity activation (the host spec's ``entity_source``)."""
    step: ReferenceStep
    previous_override: object | None
    scratch: dict = field(default_factory=dict)


def reference_attention_override(func, *args, **kwargs):
    """``optimized_attention_override``: bias self-attention, pass everything else to the backend.

    A self-attention call (as many keys as queries) whose length is not the planned layout's raises a
    clear error instead of running unbiased. Cross-attention (Wan's text) passes through.
    """
    transformer_options = kwargs.get(OPTIONS_KEYWORD) or {}
    runtime: CallRuntime | None = transformer_options.get(RUNTIME_KEY)
    previous = runtime.previous_override if runtime is not None else None
    backend = chained_backend(func, previous)
    call = plain_call(args, kwargs) if runtime is not None else None
    if call is None:
        return backend(*args, **kwargs)
    query, key, value, heads = call
    layout = runtime.step.layout
    if key.shape[1] == query.shape[1] or key.shape[1] == layout.total:
        check_sequence(query, key, layout)
    if query.shape[1] != layout.total:
        return backend(*args, **kwargs)

    if key.shape[1] == layout.total:
        if runtime.entity_source == "joint_attention":
            activation = joint_entity_activation(query, key, heads, runtime.step)
        else:
            activation = runtime.scratch.get("activation")
        chosen = core_backend(
            func,
            backend,
            kwargs,
            query,
            heads,
            chained=previous is not None,
            plan=runtime.step.plan,
            attention="biased reference attention",
        )
        return reference_self_attention(
            query,
            key,
            value,
            heads,
            runtime.step,
            attention_fn=chosen.attention_fn,
            activation=activation,
            lse_kernel=chosen.lse_kernel,
            scale=chosen.scale,
        )
    if runtime.entity_source == "cross_attention" and runtime.step.uses_erae:
        _store_cross_activation(runtime, query, key, heads)
    return backend(*args, **kwargs)


def _store_cross_activation(runtime: CallRuntime, query: Tensor, key: Tensor, heads: int) -> None:
    """Hosts that read the text in cross-attention (Wan): keep this block's entity activation for the
    next block's self-attention."""
    erae = runtime.step.erae
    if erae is None or key.shape[1] <= max(erae.all_positions):
        return
    layout = runtime.step.layout
    video_queries = split_heads(query[:, layout.video_slice], heads)
    text_keys = split_heads(key, heads)
    runtime.scratch["activation"] = cross_entity_activation(video_queries, text_keys, runtime.step)
