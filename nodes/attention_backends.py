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

from ..customvideox_core.lse_attention import LSE_KERNELS, LseKernel, module_available, runnable_kernel

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

KERNEL_MODULES: dict[str, str] = {"sage": "sageattention", "flash_attn": "flash_attn", "xformers": "xformers"}
"""Kernels that need a library, and the module to import."""


def backend_name(func) -> str:
    """The name of ComfyUI's backend function (through ``functools.wraps``)."""
    return getattr(func, "__name__", type(func).__name__)


@functools.cache
def lse_kernel_for(backend: str) -> LseKernel:
    """The LSE kernel for a ComfyUI backend name; logged once per process and backend."""
    wanted = BACKEND_KERNELS.get(backend, "torch")
    kernel = LSE_KERNELS[wanted]
    if wanted in KERNEL_MODULES and not _has_lse_entry(wanted):
        logger.info(
            "CustomVideoX: %s has no log-sum-exp entry point here; biased reference rows merge on "
            "PyTorch's fused attention instead",
            backend,
        )
        kernel = LSE_KERNELS["torch"]
    logger.info("CustomVideoX: attention backend %s -> log-sum-exp kernel %s", backend, kernel.name)
    return kernel


LSE_ENTRIES: dict[str, tuple[str, str, str | None]] = {
    "sage": ("sageattention", "sageattn", "return_lse"),
    "flash_attn": ("flash_attn", "flash_attn_func", "return_attn_probs"),
    "xformers": ("xformers.ops.fmha", "memory_efficient_attention_partial", None),
}
"""Kernel -> (module, function, keyword the kernel passes that only an LSE-returning version has).

SageAttention 1.x's ``sageattn`` takes ``**kwargs`` and would swallow ``return_lse``, returning the output
alone; 2.x names it. flash-attn 1.x has no top-level ``flash_attn_func``; 2.x's returns the lse with
``return_attn_probs``. xformers has ``memory_efficient_attention_partial`` from 0.0.25 on."""


def _has_lse_entry(kernel: str) -> bool:
    """True when the kernel's library is installed and has the entry point and keyword it is called with."""
    if not module_available(KERNEL_MODULES[kernel]):
        return False
    module_name, function_name, keyword = LSE_ENTRIES[kernel]
    try:
        module = importlib.import_module(module_name)
    except (ImportError, OSError, RuntimeError) as error:  # a broken install (e.g. built for another torch)
        logger.debug("CustomVideoX: importing %s failed: %s", module_name, error)
        return False
    function = getattr(module, function_name, None)
    if not callable(function):
        return False
    if keyword is None:
        return True
    try:
        return keyword in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def usable_kernel(backend: str, query, head_dim: int) -> LseKernel | None:
    """The backend's LSE kernel if it runs on ``query`` at ``head_dim``, else PyTorch's, else None.

    The one decision of an attention call: the core's biased paths take the answer as it is.
    """
    return runnable_kernel((lse_kernel_for(backend), LSE_KERNELS["torch"]), query, head_dim)


def announce(backend: str, path: str | None, kernel: LseKernel | None, attention: str) -> None:
    """Log once per process the ``path`` (None: nothing biased, no log) ``attention`` takes on a backend."""
    if path is not None:
        announce_path(backend, path, kernel.name if kernel is not None else "augmented head dims", attention)


@functools.cache
def announce_path(
    backend: str, path: str, kernel: str, attention: str = "biased reference attention"
) -> None:
    """Log once per process which path the biased rows of ``attention`` take on a backend (and kernel)."""
    logger.info("CustomVideoX: %s on %s runs the %s path (%s)", attention, backend, path, kernel)
