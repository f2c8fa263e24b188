"""The Stand-In MODEL patch: ComfyUI extension points only, its own wrapper keys.

``install_standin`` installs on a clone (``standin_nodes.apply_standin`` makes it):

- the conditioning-role wrappers of :mod:`.patch` under this module's own key, so that every guider's
  passes know whether they see the reference;
- a ``WrappersMP.OUTER_SAMPLE`` wrapper that empties the reference K/V cache when a sampling starts;
- the pack's one ``WrappersMP.DIFFUSION_MODEL`` wrapper (:class:`~.patch.ReferenceWrapper`), which for
  every model call reads this patch as a *cached source* of its table of reference sources
  (:meth:`StandInPatch.source_for`: the reference K/V of this DiT, computed once per sampling and expert by
  ``customvideox_core.standin.branch``, then reused) next to any CustomVideoX Apply's reference, and sets
  the one attention override for that call (``nodes/attention_override.py``): every block's
  self-attention runs the video queries over ``[video keys | cached reference keys]`` (plus any other
  source's keys) with the TAB/ERAE bias on the video → reference logits, on the user's backend's LSE
  kernel where one runs; the cross-attention passes through (and, with ERAE, leaves the entity
  activation for the next block).

The video latent is not changed: no frame is appended, the video keeps its positions and the host's
forward runs as it is. Any override that was already set (another pack's) stays in the chain.
The cached reference layout of the pack's own adapters (``nodes/cached_layout.py``) runs through this
same patch, and its training through this wrapper with the cache off (``StandInPatch.cache = None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import comfy.patcher_extension
from torch import Tensor

from ..customvideox_core.clock import ClockSpan
from ..customvideox_core.erae import ERAEConfig
from ..customvideox_core.reference_sources import Source
from ..customvideox_core.standin.branch import ReferenceKV, compute_reference_kv, reference_kv
from ..customvideox_core.standin.cache import ReferenceKVCache, ReferenceKVKey
from ..customvideox_core.standin.lora_file import StandInLoRA
from ..customvideox_core.standin.video_attention import as_source, plan_video_step
from ..customvideox_core.tab import TABSchedule
from .host_model import host_signature
from .patch import ConditioningRole, ReferenceWrapper, install_conditioning_roles
from .wrapper_args import STANDIN_SETTINGS_KEY, STANDIN_WRAPPER_KEY

WRAPPER_KEY = STANDIN_WRAPPER_KEY
"""Key of the conditioning-role wrappers (its own, so a Stand-In and a CustomVideoX patch can coexist)."""
SETTINGS_KEY = STANDIN_SETTINGS_KEY


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

    def source_for(
        self, dit, x: Tensor, roles: Sequence[ConditioningRole], progress: ClockSpan
    ) -> tuple[Source, ReferenceKV, int]:
        """This patch as a cached source of one model call on ``x`` ``[B, C, T, H, W]`` (rows ``roles``,
        sampling progress ``progress``): ``(source, its keys and values per block, tokens per frame)``."""
        grid = video_grid(dit, x)
        reference = self.reference_for(dit, grid, x)
        step = plan_video_step(
            row_is_cond=[role.positive for role in roles],
            row_sees_reference=[
                role.sees(uncond_sees_reference=self.uncond_sees_reference) for role in roles
            ],
            tab_value=self.tab.mean_over(progress) if self.tab is not None else 0.0,
            reference_weights=self.reference_weights,
            erae=self.erae,
            device=x.device,
        )
        threshold = self.erae.threshold if self.erae is not None else 0.0
        return as_source(step, threshold=threshold), reference, grid[1] * grid[2]

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


class StandInWrapper(ReferenceWrapper):
    """``DIFFUSION_MODEL`` wrapper of Apply Stand-In: the pack's one reference wrapper
    (:class:`~.patch.ReferenceWrapper`), which reads this patch as a cached source of its table."""


def install_standin(model, patch: StandInPatch) -> None:
    """Put the wrappers (conditioning roles, cache reset, the pack's reference wrapper) and the settings on
    ``model`` (a clone); replaces an earlier Stand-In patch. A CustomVideoX Apply on the same model stays:
    its reference and this one are two sources of the same table."""
    install_conditioning_roles(model)
    for kind, wrapper in (
        (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, ResetCacheWrapper(patch.cache)),
        (comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, StandInWrapper(host_signature(model))),
    ):
        model.remove_wrappers_with_key(kind, WRAPPER_KEY)
        model.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
    model.model_options.setdefault("transformer_options", {})[SETTINGS_KEY] = patch
