"""What the core's reference attention runs on for each ComfyUI attention backend, and saying so once.

ComfyUI hands an attention override ``func``: the backend the user chose (``--use-sage-attention``,
``--use-flash-attention``, ...). The biased rows' ``"lse-merge"`` path needs that backend's
log-sum-exp, which ComfyUI's wrappers do not return, so :data:`BACKEND_KERNELS` maps each backend (by
function name) to the kernel of the same library that does
(:data:`customvideox_core.lse_attention.LSE_KERNELS`). Backends not in the table, and libraries without
their LSE entry point here, use PyTorch's fused kernel. :func:`core_backend` gives both overrides (the
pack's and Stand-In's) what the core call takes (:class:`CoreBackend`: the user's backend on
head-split tensors, the LSE kernel known to run on the call, the model's scale) and logs the biased
rows' path once per process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..customvideox_core.attention import AttentionFn
from ..customvideox_core.biased_paths import RowPlan, biased_rows_path
from ..customvideox_core.lse_attention import LSE_KERNELS, LseKernel, runnable_kernel
from .wrapper_args import head_split_kernel

logger = logging.getLogger(__name__)

BACKEND_KERNELS: dict[str, str] = {
    "attention_pytorch": "torch",
    "attention_sage": "sage",
    "attention_flash": "flash_attn",
    "attention_xformers": "xformers",
    "attention_sub_quad": "torch",
    "attention_split": "torch",
    "attention_basic": "torch",
}
"""ComfyUI backend function name -> name of its LSE kernel in ``LSE_KERNELS``."""


def backend_name(func) -> str:
    """The name of ComfyUI's backend function (through ``functools.wraps``)."""
    return getattr(func, "__name__", type(func).__name__)


@functools.cache
def lse_kernel_for(backend: str) -> LseKernel:
    """The LSE kernel for a ComfyUI backend name; logged once per process and backend."""
    wanted = BACKEND_KERNELS.get(backend, "torch")
    kernel = LSE_KERNELS[wanted]
    if kernel.entry is not None and not kernel.entry.available():
        logger.info(
            "CustomVideoX: %s has no log-sum-exp entry point here; biased reference rows merge on "
            "PyTorch's fused attention instead",
            backend,
        )
        kernel = LSE_KERNELS["torch"]
    logger.info("CustomVideoX: attention backend %s -> log-sum-exp kernel %s", backend, kernel.name)
    return kernel


def usable_kernel(backend: str, query, head_dim: int) -> LseKernel | None:
    """The backend's LSE kernel if it runs on ``query`` at ``head_dim``, else PyTorch's, else None.

    The one decision of an attention call: the core's biased paths take the answer as it is.
    """
    return runnable_kernel((lse_kernel_for(backend), LSE_KERNELS["torch"]), query, head_dim)


@dataclass(frozen=True)
class CoreBackend:
    """What the core's reference attention gets from one host attention call: ``attention_fn`` (the
    user's backend on "b H L D" tensors at scale ``1 / sqrt(D)``), ``lse_kernel`` (an LSE kernel known to
    run on the call's tensors; None: the augmented path) and the model's softmax ``scale`` (None: the
    core's default ``1 / sqrt(D)``)."""

    attention_fn: AttentionFn
    lse_kernel: LseKernel | None
    scale: float | None


def core_backend(
    func,
    backend: Callable,
    kwargs: dict,
    query: Tensor,
    heads: int,
    *,
    chained: bool,
    plan: RowPlan,
    attention: str,
) -> CoreBackend:
    """The backend of one override call (query ``[B, L, (H D)]``), its path logged once.

    ``func``: ComfyUI's backend function (named in :data:`BACKEND_KERNELS`); ``backend``: what the override
    runs (``func`` behind any earlier override); ``chained``: an earlier override is in the chain, so every
    call goes through ``backend`` and no LSE kernel bypasses it (the augmented path). ``plan``: the
    step's row plan, which says the biased rows' path with that kernel (None: nothing biased, no log);
    ``attention`` names the attention in the log.
    """
    name = backend_name(func)
    kernel = None if chained else usable_kernel(name, query, query.shape[-1] // heads)
    path = biased_rows_path(plan, kernel)
    if path is not None:
        announce_path(name, path, kernel.name if kernel is not None else "augmented head dims", attention)
    return CoreBackend(head_split_kernel(backend, kwargs), kernel, kwargs.get("scale"))


@functools.cache
def announce_path(backend: str, path: str, kernel: str, attention: str) -> None:
    """Log once per process which path the biased rows of ``attention`` take on a backend (and kernel)."""
    logger.info("CustomVideoX: %s on %s runs the %s path (%s)", attention, backend, path, kernel)
