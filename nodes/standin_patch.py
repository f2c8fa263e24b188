"""The Stand-In MODEL patch: ComfyUI extension points only, its own wrapper keys.

``install_standin`` installs on a clone (``standin_nodes.apply_standin`` makes it):

- the conditioning-role wrappers of :mod:`.patch` under this module's own key, so that every guider's
  passes know whether they see the reference;
- a ``WrappersMP.OUTER_SAMPLE`` wrapper that empties the reference K/V cache when a sampling starts;
- a ``WrappersMP.DIFFUSION_MODEL`` wrapper that, for every model call, gets the reference K/V of this
  DiT (computed once per sampling and expert by ``customvideox_core.standin.branch``, then reused), and
  sets ``transformer_options["optimized_attention_override"]`` for that call only;
- the override: the first of every block's two attention calls (Wan's self-attention) runs the video queries
  over ``[video keys | cached reference keys]`` with the TAB/ERAE bias on the video → reference logits,
  on the user's backend's LSE kernel where one runs (``attention_backends.core_backend``, decided once per
  call, its path logged once); the cross-attention passes through (and, with ERAE, leaves the entity
  activation for the next block).

The video latent is not changed: no frame is appended, the video keeps its positions and the host's
forward runs as it is. Any override that was already set (another pack's) stays in the chain.
The cached reference layout of the pack's own adapters (``nodes/cached_layout.py``) runs through this
same patch, and its training through this wrapper with the cache off (``StandInPatch.cache = None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import comfy.patcher_extension
from torch import Tensor

from ..customvideox_core.biased_paths import split_heads
from ..customvideox_core.erae import ERAEConfig, entity_activation
from ..customvideox_core.host_specs import spec_for
from ..customvideox_core.standin.branch import ReferenceKV, compute_reference_kv, reference_kv
from ..customvideox_core.standin.cache import ReferenceKVCache, ReferenceKVKey
from ..customvideox_core.standin.lora_file import StandInLoRA
from ..customvideox_core.standin.video_attention import (
    VideoStep,
    plan_video_step,
    video_self_attention,
)
from ..customvideox_core.tab import TABSchedule
from .attention_backends import core_backend
from .patch import install_conditioning_roles, progress_of, row_roles
from .wrapper_args import (
    OPTIONS_KEYWORD,
    OVERRIDE_KEY,
    chained_backend,
    options_of,
    plain_call,
    with_options,
)

WRAPPER_KEY = "customvideox_standin"
CONDITIONING_ROLES_KEY = "customvideox_standin_roles"
"""Key of the conditioning-role wrappers (its own, so a Stand-In and a CustomVideoX patch can coexist)."""
SETTINGS_KEY = "cvx_standin"
RUNTIME_KEY = "cvx_standin_runtime"
_OPTIONS_INDEX = spec_for("wan").transformer_options_index
_CONTEXT_INDEX = spec_for("wan").context_index


@dataclass(frozen=True, eq=False)
class StandInPatch:
    """One patched MODEL: reference latent ``[1, C, 1, h, w]`` (model space), weights ``m_j`` ``[Lr]``.

    ``cache``: where the reference K/V are kept for the sampling; ``None`` recomputes them, with
    autograd, at every model call (training the cached layout's LoRA, whose weights change every step).
    """

    lora: StandInLoRA | None
    strength: float
    reference_latent: Tensor
    reference_weights: Tensor
    tab: TABSchedule | None
    erae: ERAEConfig | None
    uncond_sees_reference: bool
    cache: ReferenceKVCache | None = field(default_factory=ReferenceKVCache)

    def reference_for(self, dit, grid: tuple[int, int, int], x: Tensor) -> ReferenceKV:
        """The reference K/V for a video of token grid ``grid`` computed like ``x``: cached and without
        gradients when sampling, fresh with autograd every call when there is no cache (training)."""
        branch = compute_reference_kv if self.cache is not None else reference_kv

        def compute() -> ReferenceKV:
            return branch(
                dit,
                self.reference_latent,
                self.lora,
                strength=self.strength,
                video_grid=grid,
                dtype=x.dtype,
                device=x.device,
            )

        if self.cache is None:
            return compute()
        key = ReferenceKVKey(model=id(dit), video_grid=grid, device=str(x.device), dtype=str(x.dtype))
        return self.cache.get(key, compute)


@dataclass(eq=False)
class StandInRuntime:
    """Per-model-call state, dropped when the call returns."""

    reference: ReferenceKV
    step: VideoStep
    erae: ERAEConfig | None
    frame_tokens: int
    previous_override: object | None
    calls: dict[int, int] = field(default_factory=dict)
    activation: Tensor | None = None

    def is_self_attention(self, block: int) -> bool:
        """Count this block's attention calls: odd ones are its self-attention, even ones its
        cross-attention. A block that runs again (gradient checkpointing recomputes it in backward)
        starts a new pair, so it gets the reference again."""
        self.calls[block] = self.calls.get(block, 0) + 1
        return self.calls[block] % 2 == 1


def video_grid(dit, x: Tensor) -> tuple[int, int, int]:
    """Token grid ``(f, h, w)`` of the (padded) video latent ``[B, C, T, H, W]``."""
    pt, ph, pw = (int(p) for p in dit.patch_size)
    t, h, w = x.shape[-3:]
    return -(-t // pt), -(-h // ph), -(-w // pw)


class ResetCacheWrapper:
    """``OUTER_SAMPLE`` wrapper: every sampling starts with an empty reference K/V cache (if there is one)."""

    def __init__(self, cache: ReferenceKVCache | None) -> None:
        self.cache = cache

    def __call__(self, executor, *args, **kwargs):
        if self.cache is None:  # no cache (training): nothing kept between samplings
            return executor(*args, **kwargs)
        self.cache.clear()
        try:
            return executor(*args, **kwargs)
        finally:
            self.cache.clear()


class StandInWrapper:
    """``DIFFUSION_MODEL`` wrapper: cached reference K/V + the attention override for this call."""

    def __call__(self, executor, *args, **kwargs):
        options = options_of(args, kwargs, _OPTIONS_INDEX)
        patch: StandInPatch | None = options.get(SETTINGS_KEY)
        if patch is None:
            return executor(*args, **kwargs)
        x = args[0]
        dit = executor.class_obj
        grid = video_grid(dit, x)
        reference = patch.reference_for(dit, grid, x)
        tab_value = patch.tab.mean_over(progress_of(options)) if patch.tab is not None else 0.0
        roles = row_roles(options, x.shape[0])
        if patch.erae is not None and any(role.positive for role in roles):
            patch.erae.check_text_length(args[_CONTEXT_INDEX].shape[1])
        step = plan_video_step(
            row_is_cond=[role.positive for role in roles],
            row_sees_reference=[
                role.sees(uncond_sees_reference=patch.uncond_sees_reference) for role in roles
            ],
            tab_value=tab_value,
            reference_weights=patch.reference_weights,
            erae=patch.erae,
            device=x.device,
        )
        call_options = dict(options)
        call_options[RUNTIME_KEY] = StandInRuntime(
            reference=reference,
            step=step,
            erae=patch.erae,
            frame_tokens=grid[1] * grid[2],
            previous_override=options.get(OVERRIDE_KEY),
        )
        call_options[OVERRIDE_KEY] = standin_attention_override
        args, kwargs = with_options(args, kwargs, _OPTIONS_INDEX, call_options)
        return executor(*args, **kwargs)


def standin_attention_override(func, *args, **kwargs):
    """``optimized_attention_override``: the first of each block's two calls gets the reference keys."""
    options = kwargs.get(OPTIONS_KEYWORD) or {}
    runtime: StandInRuntime | None = options.get(RUNTIME_KEY)
    backend = chained_backend(func, runtime.previous_override if runtime is not None else None)
    block = options.get("block_index")
    call = plain_call(args, kwargs) if runtime is not None and block is not None else None
    if call is None:
        return backend(*args, **kwargs)
    query, key, value, heads = call

    if runtime.is_self_attention(block):
        if key.shape[1] != query.shape[1]:
            raise ValueError(
                f"Stand-In expected block {block}'s first attention call to be its self-attention, but it has "
                f"{query.shape[1]} queries and {key.shape[1]} keys; this Wan variant is not supported."
            )
        if block >= len(runtime.reference.keys):
            raise ValueError(
                f"Stand-In has reference keys for {len(runtime.reference.keys)} blocks, not {block + 1}."
            )
        chosen = core_backend(
            func,
            backend,
            kwargs,
            query,
            heads,
            chained=runtime.previous_override is not None,
            plan=runtime.step.plan,
            attention="Stand-In video attention",
        )
        return video_self_attention(
            query,
            key,
            value,
            runtime.reference.keys[block],
            runtime.reference.values[block],
            heads,
            runtime.step,
            attention_fn=chosen.attention_fn,
            activation=runtime.activation,
            lse_kernel=chosen.lse_kernel,
            scale=chosen.scale,
        )
    _store_activation(runtime, query, key, heads)
    return backend(*args, **kwargs)


def _store_activation(runtime: StandInRuntime, query: Tensor, key: Tensor, heads: int) -> None:
    """Wan reads the text in cross-attention: keep this block's entity activation for the next block."""
    erae = runtime.erae
    step = runtime.step
    if erae is None or step.gamma == 0.0 or not any(step.erae_rows) or not step.plan.biased:
        return
    if key.shape[1] <= max(step.entity_positions) or query.shape[1] % runtime.frame_tokens:
        return
    video_queries = split_heads(query, heads)
    text_keys = split_heads(key, heads)
    runtime.activation = entity_activation(
        video_queries,
        text_keys,
        step.entity_positions,
        frame_tokens=runtime.frame_tokens,
        threshold=erae.threshold,
    )


def install_standin(model, patch: StandInPatch) -> None:
    """Put the wrappers (conditioning roles, cache reset, the DiT wrapper) and the settings on ``model``
    (a clone); replaces an earlier Stand-In patch."""
    install_conditioning_roles(model, CONDITIONING_ROLES_KEY)
    for kind, wrapper in (
        (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, ResetCacheWrapper(patch.cache)),
        (comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, StandInWrapper()),
    ):
        model.remove_wrappers_with_key(kind, WRAPPER_KEY)
        model.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
    model.model_options.setdefault("transformer_options", {})[SETTINGS_KEY] = patch
