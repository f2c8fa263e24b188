"""The attention half of the CustomVideoX patch: the one ``optimized_attention_override``.

The ``DIFFUSION_MODEL`` wrapper in :mod:`.patch` plans one :class:`CallRuntime` per model call (the call's
table of reference sources: the pack's appended frames, a host's own frames, Stand-In's cached branch)
and puts :func:`reference_attention_override` into that call's ``transformer_options``. ComfyUI then hands
every attention call of the DiT to it, with ``func`` the backend the user chose; the override runs every
self-attention through the core's one reference attention
(:func:`customvideox_core.reference_sources.sources_self_attention`) and passes every other call through
(on Wan with ERAE, leaving its entity activation for the next self-attention).

Which call is a self-attention: with sources in the sequence, the one over the planned ``[text | video |
reference]`` layout (a call of another length with as many keys as queries is an error, never an unbiased
run); with only cached sources, the first of each block's two calls (Wan's self-attention, then its
cross-attention; a block that runs again, as under gradient checkpointing, starts a new pair).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from ..customvideox_core.biased_paths import BiasedPaths
from ..customvideox_core.host_specs import EntitySource
from ..customvideox_core.layout import TokenLayout
from ..customvideox_core.reference_attention import check_sequence
from ..customvideox_core.reference_sources import SourcePlan, sequence_activation, sources_self_attention
from .attention_backends import core_backend
from .wrapper_args import OPTIONS_KEYWORD, chained_backend, plain_call

RUNTIME_KEY = "cvx_runtime"


@dataclass(eq=False)
class CallRuntime:
    """Per-model-call state, created by the wrapper and dropped when the call returns.

    ``layout``: the self-attention sequence when sources sit in it, else None (only cached sources: the
    whole sequence counts as video, of ``frame_tokens`` tokens per frame). ``cached``: name → the cached
    source's per-block keys and values (``keys``/``values`` tuples of ``[1, tokens, (H D)]``).
    """

    entity_source: EntitySource
    plan: SourcePlan
    layout: TokenLayout | None
    frame_tokens: int
    previous_override: object | None
    cached: Mapping[str, object] = field(default_factory=dict)
    activation: Tensor | None = None
    calls: dict[int, int] = field(default_factory=dict)

    def layout_of(self, length: int) -> TokenLayout:
        """The planned layout, or for cached sources alone the whole sequence as video."""
        if self.layout is not None:
            return self.layout
        return TokenLayout(text=0, video=length, reference=0, frame_tokens=self.frame_tokens)

    def is_self_attention(self, query: Tensor, key: Tensor, block: int | None) -> bool:
        """Whether this call is the self-attention the sources join (module docstring); raises when a
        call that should be cannot be."""
        if self.layout is not None:
            if key.shape[1] == query.shape[1] or key.shape[1] == self.layout.total:
                check_sequence(query, key, self.layout)
            return query.shape[1] == self.layout.total and key.shape[1] == self.layout.total
        if block is None:
            return False
        self.calls[block] = self.calls.get(block, 0) + 1
        if self.calls[block] % 2 == 0:
            return False
        if key.shape[1] != query.shape[1] or query.shape[1] % self.frame_tokens:
            raise ValueError(
                f"CustomVideoX expected block {block}'s first attention call to be its self-attention over "
                f"the video ({self.frame_tokens} tokens a frame), but it has {query.shape[1]} queries and "
                f"{key.shape[1]} keys: another node changed this model's attention calls. Put the other "
                "node after the CustomVideoX nodes, or remove it."
            )
        return True

    def cached_for(self, block: int | None) -> dict[str, tuple[Tensor, Tensor]]:
        """The cached sources' keys and values of ``block``."""
        found = {}
        for name, reference in self.cached.items():
            if block is None or block >= len(reference.keys):
                raise ValueError(
                    f"the cached reference {name!r} has keys for {len(reference.keys)} blocks, not for "
                    f"block {block}: it was computed for another model"
                )
            found[name] = (reference.keys[block], reference.values[block])
        return found


def reference_attention_override(func, *args, **kwargs):
    """``optimized_attention_override``: every source's reference in self-attention, the rest passed on."""
    transformer_options = kwargs.get(OPTIONS_KEYWORD) or {}
    runtime: CallRuntime | None = transformer_options.get(RUNTIME_KEY)
    previous = runtime.previous_override if runtime is not None else None
    backend = chained_backend(func, previous)
    call = plain_call(args, kwargs) if runtime is not None else None
    if call is None:
        return backend(*args, **kwargs)
    query, key, value, heads = call
    block = transformer_options.get("block_index")
    if not runtime.is_self_attention(query, key, block):
        if runtime.entity_source == "cross_attention" and runtime.plan.uses_erae:
            _store_cross_activation(runtime, query, key, heads)
        return backend(*args, **kwargs)

    layout = runtime.layout_of(query.shape[1])
    activation = runtime.activation
    if runtime.entity_source == "joint_attention":
        activation = None
        if layout.text:
            activation = sequence_activation(runtime.plan, layout, query, key[:, layout.text_slice], heads)
    chosen = core_backend(
        func,
        backend,
        kwargs,
        query,
        heads,
        chained=previous is not None,
        plan=runtime.plan,
        attention="biased reference attention",
    )
    paths = BiasedPaths.of(query, heads, chosen.attention_fn, chosen.lse_kernel, chosen.scale)
    return sources_self_attention(
        query,
        key,
        value,
        layout,
        runtime.plan,
        paths,
        cached=runtime.cached_for(block) if runtime.cached else None,
        activation=activation,
    )


def _store_cross_activation(runtime: CallRuntime, query: Tensor, key: Tensor, heads: int) -> None:
    """Hosts that read the text in cross-attention (Wan): keep this block's entity activation for the
    next block's self-attention."""
    positions = [position for term in runtime.plan.term_positions for position in term]
    if not positions or key.shape[1] <= max(positions) or query.shape[1] % runtime.frame_tokens:
        return
    layout = runtime.layout_of(query.shape[1])
    if query.shape[1] != layout.total:
        return
    runtime.activation = sequence_activation(runtime.plan, layout, query, key, heads)
