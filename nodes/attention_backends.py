"""Which LSE-returning kernel stands in for each ComfyUI attention backend, and saying so once.

ComfyUI hands the attention override ``func``: the backend the user chose (``--use-sage-attention``,
``--use-flash-attention``, ...). The biased rows' ``"lse-merge"`` path needs that backend's
log-sum-exp, which ComfyUI's wrappers do not return, so this table maps each backend (by function name)
to the kernel of the same library that does (:data:`customvideox_core.lse_attention.LSE_KERNELS`).
Backends not in the table, and libraries without an LSE entry point here, use PyTorch's fused kernel.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

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
    if wanted in LSE_ENTRIES and not _has_lse_entry(LSE_ENTRIES[wanted]):
        logger.info(
            "CustomVideoX: %s has no log-sum-exp entry point here; biased reference rows merge on "
            "PyTorch's fused attention instead",
            backend,
        )
        kernel = LSE_KERNELS["torch"]
    logger.info("CustomVideoX: attention backend %s -> log-sum-exp kernel %s", backend, kernel.name)
    return kernel


@dataclass(frozen=True)
class LseEntry:
    """Where a library's LSE-returning attention lives: ``module.function``, and the ``keyword`` the
    kernel passes that only an LSE-returning version has (None: the function itself is new enough)."""

    module: str
    function: str
    keyword: str | None


LSE_ENTRIES: dict[str, LseEntry] = {
    "sage": LseEntry("sageattention", "sageattn", "return_lse"),
    "flash_attn": LseEntry("flash_attn", "flash_attn_func", "return_attn_probs"),
    "xformers": LseEntry("xformers.ops.fmha", "memory_efficient_attention_partial", None),
}
"""The kernels that need a library: kernel name -> its entry point.

SageAttention 1.x's ``sageattn`` takes ``**kwargs`` and would swallow ``return_lse``, returning the output
alone; 2.x names it. flash-attn 1.x has no top-level ``flash_attn_func``; 2.x's returns the lse with
``return_attn_probs``. xformers has ``memory_efficient_attention_partial`` from 0.0.25 on."""


def _has_lse_entry(entry: LseEntry) -> bool:
    """True when the library imports and has the entry point and keyword the kernel calls (an absent
    library raises ImportError, a broken install, e.g. one built for another torch, may raise more)."""
    try:
        module = importlib.import_module(entry.module)
    except (ImportError, OSError, RuntimeError) as error:
        logger.debug("CustomVideoX: importing %s failed: %s", entry.module, error)
        return False
    function = getattr(module, entry.function, None)
    if not callable(function):
        return False
    if entry.keyword is None:
        return True
    try:
        return entry.keyword in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


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

    attention_fn: Callable[[Tensor, Tensor, Tensor], Tensor]
    lse_kernel: LseKernel | None
    scale: float | None

    def keywords(self) -> dict[str, object]:
        """The core call's keyword arguments ``attention_fn``, ``lse_kernel`` and ``scale``."""
        return {"attention_fn": self.attention_fn, "lse_kernel": self.lse_kernel, "scale": self.scale}


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
    announce(name, biased_rows_path(plan, kernel), kernel, attention)
    return CoreBackend(head_split_kernel(backend, kwargs), kernel, kwargs.get("scale"))


def announce(backend: str, path: str | None, kernel: LseKernel | None, attention: str) -> None:
    """Log once per process the ``path`` (None: nothing biased, no log) ``attention`` takes on a backend."""
    if path is not None:
        announce_path(backend, path, kernel.name if kernel is not None else "augmented head dims", attention)


@functools.cache
def announce_path(backend: str, path: str, kernel: str, attention: str) -> None:
    """Log once per process which path the biased rows of ``attention`` take on a backend (and kernel)."""
    logger.info("CustomVideoX: %s on %s runs the %s path (%s)", attention, backend, path, kernel)
