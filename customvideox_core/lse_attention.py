"""Attention kernels that also return the log-sum-exp of each query row, and the exact merge of two parts.

With ``lse`` the natural log of a row's softmax denominator, attention over keys ``A ∪ B`` is exactly::

    out = out_A + sigmoid(lse_B - lse_A) · (out_B - out_A)

so a few reference keys can be attended to separately (with their bias) while the many other keys run
through the fused kernel at the model's native head dim. Each :class:`LseKernel` wraps one library's
LSE-returning entry point behind one signature::

    kernel(query, key, value, scale) -> (out "B H Lq D", lse "B H Lq" float32)

query "B H Lq D", key/value "B H Lk D", no mask. ``supports(query, head_dim)`` says whether the kernel
runs on such inputs (device, dtype, head dim); ``head_dims`` lists the head dims it runs natively (``None`` = any
multiple of 8), used to pad augmented head dims. :data:`LSE_KERNELS` is the table, by name.

A kernel may also take an additive bias ``"B 1 Lq Lk"`` shared by the heads (``run_biased``, where
``takes_bias(query)``): PyTorch's CPU flash op does. The small biased reference part then runs at the
native head dim with its ``Lq × reference`` bias as a mask instead of carrying the bias as extra head dims.

A kernel that walks the keys in fixed blocks (``key_block``; PyTorch's CPU flash op: 512 keys) pays for a
short last block nearly as much as for a whole one. :func:`whole_block_keys` says how many of the many keys
to give such a kernel so that it runs whole blocks only; the few keys left over join the small part, with
a zero bias. This only moves work between two exact calls: the result does not depend on it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from .attention import augmented_head_dim

logger = logging.getLogger(__name__)

LseFn = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]
"""(query, key, value "B H L D", scale) -> (out "B H Lq D", lse "B H Lq" float32 or float64, natural log)."""

BiasedLseFn = Callable[[Tensor, Tensor, Tensor, float, Tensor], tuple[Tensor, Tensor]]
"""Like :data:`LseFn` with an additive bias "B 1 Lq Lk" (float32, or float64 for float64 tokens) last."""


@dataclass(frozen=True)
class LseEntry:
    """Where a library's LSE-returning attention lives: ``module.function``, and the ``keyword`` the kernel
    passes that only an LSE-returning version has (None: the function being there is enough)."""

    module: str
    function: str
    keyword: str | None

    def function_of(self) -> Callable:
        """The library's function (imports the module)."""
        return getattr(importlib.import_module(self.module), self.function)

    def available(self) -> bool:
        """True when the library imports and has the function and keyword the kernel calls. An absent
        library raises ImportError; a broken install (e.g. one built for another torch) may raise more."""
        try:
            module = importlib.import_module(self.module)
        except (ImportError, OSError, RuntimeError) as error:
            logger.debug("CustomVideoX: importing %s failed: %s", self.module, error)
            return False
        function = getattr(module, self.function, None)
        if not callable(function):
            return False
        if self.keyword is None:
            return True
        try:
            return self.keyword in inspect.signature(function).parameters
        except (TypeError, ValueError):  # no signature to read
            return False


@dataclass(frozen=True)
class LseKernel:
    """One LSE-returning attention kernel: its name, the call, where it runs, its native head dims.

    ``quantized``: the kernel rounds q and k to a low precision (SageAttention: int8 per block). The
    small biased reference part then runs on PyTorch's kernel, so the bias is never quantized.
    ``run_biased``: the same kernel with an additive bias, on the devices ``bias_devices`` (None: none).
    ``key_block``: keys per block of the kernel on the devices ``key_block_devices`` (None: not blocked,
    or unknown). ``entry``: the library function the kernel calls (None: PyTorch's own op, always there).
    """

    name: str
    run: LseFn
    supports: Callable[[Tensor, int], bool]
    head_dims: tuple[int, ...] | None = None
    quantized: bool = False
    run_biased: BiasedLseFn | None = None
    bias_devices: tuple[str, ...] = ()
    key_block: int | None = None
    key_block_devices: tuple[str, ...] = ()
    entry: LseEntry | None = None

    def block_on(self, query: Tensor) -> int | None:
        """Keys per block of this kernel on ``query``'s device, or None."""
        return self.key_block if query.device.type in self.key_block_devices else None

    def takes_bias(self, query: Tensor) -> bool:
        """True when ``run_biased`` runs on ``query``'s device."""
        return self.run_biased is not None and query.device.type in self.bias_devices

    def padded_head_dim(self, head_dim: int) -> int | None:
        """Smallest native head dim >= ``head_dim`` (aligned as ``augmented_head_dim`` aligns when any is
        allowed), or None."""
        if self.head_dims is None:
            return augmented_head_dim(head_dim, 0)
        fitting = [dim for dim in self.head_dims if dim >= head_dim]
        return min(fitting) if fitting else None


def runnable_kernel(kernels: Iterable[LseKernel | None], query: Tensor, head_dim: int) -> LseKernel | None:
    """The first of ``kernels`` that runs on ``query`` ("B L (H D)" or "B H L D") at ``head_dim``, or None.

    The one place where an attention call decides whether an LSE kernel runs: the biased paths then take
    the answer as it is (``None``: the augmented path).
    """
    for kernel in kernels:
        if kernel is not None and kernel.supports(query, head_dim):
            return kernel
    return None


SHORT_BLOCK_FRACTION = 4
"""A last block of at most ``key_block / SHORT_BLOCK_FRACTION`` keys is moved to the small part."""


def whole_block_keys(keys: int, key_block: int | None) -> int:
    """How many of ``keys`` keys to give a kernel of ``key_block`` keys per block (see the module doc).

    ``keys`` rounded down to whole blocks when the last block is short (at most a quarter block) and at
    least one whole block remains; else ``keys``.
    """
    if key_block is None or keys <= key_block:
        return keys
    tail = keys % key_block
    return keys - tail if tail * SHORT_BLOCK_FRACTION <= key_block else keys


def merge_partial_attention(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> Tensor:
    """Exact softmax attention over the union of two disjoint key sets from the two partial results.

    out "B H Lq D" (any float dtype), lse "B H Lq" (float32). Returns "B H Lq D" in ``out_a``'s dtype.
    The weight ``sigmoid(lse_b - lse_a)`` is formed in float32; the blend runs in the outputs' dtype
    (in place on ``out_a``, which must not be needed afterwards).
    """
    work = torch.promote_types(torch.promote_types(lse_a.dtype, lse_b.dtype), torch.float32)
    weight = torch.sigmoid(lse_b.to(work) - lse_a.to(work)).unsqueeze(-1)
    return out_a.lerp_(out_b.to(out_a.dtype), weight.to(out_a.dtype))


# --- PyTorch's own fused ops ---------------------------------------------------------------------------


def _torch_sdpa_lse(query: Tensor, key: Tensor, value: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """PyTorch's flash op (CPU; CUDA half types) or memory-efficient op (CUDA float32), with lse."""
    if query.device.type == "cpu":
        return _torch_cpu_flash(query, key, value, scale)
    if query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] <= 256:
        out, lse, *_ = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, 0.0, False, False, scale=scale
        )
        return out, lse
    out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, None, True, 0.0, False, scale=scale
    )
    return out, lse[..., : query.shape[2]]  # the efficient op pads lse's last dim to a multiple of 32


CPU_FLASH_KEY_BLOCK = 512
"""Keys per block of PyTorch's CPU flash op (``kvSplitSize`` in ATen's ``FlashAttentionKernel.cpp``, 512 for
every query length since PyTorch 2.2). Measured at 1,056 keys, 1,024 keys run 5% faster than 1,056
would at the same cost per key. Only speed depends on this number."""


def _torch_cpu_flash(
    query: Tensor, key: Tensor, value: Tensor, scale: float, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """PyTorch's CPU flash op, with an additive ``bias`` mask when given; lse at least float32."""
    mask = {} if bias is None else {"attn_mask": bias}
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, False, scale=scale, **mask
    )
    return out, lse.to(torch.promote_types(lse.dtype, torch.float32))


def _cpu_flash_takes_mask() -> bool:
    """PyTorch's CPU flash op has taken ``attn_mask`` since 2.3; older builds run without the mask path."""
    try:
        schema = str(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default._schema)
    except (AttributeError, RuntimeError):  # a build without the op: the CPU path keeps extra head dims
        return False
    return "attn_mask" in schema


def _torch_supports(query: Tensor, head_dim: int) -> bool:
    if query.device.type == "cpu":
        return query.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    return query.device.type == "cuda" and query.dtype in (torch.float32, torch.float16, torch.bfloat16)


# --- flash-attn ----------------------------------------------------------------------------------------


FLASH_ATTN_ENTRY = LseEntry("flash_attn", "flash_attn_func", "return_attn_probs")
"""flash-attn 2's ``flash_attn_func`` returns the lse with ``return_attn_probs``; 1.x has no top-level
``flash_attn_func``."""


def _flash_attn_lse(query: Tensor, key: Tensor, value: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """flash-attn 2's ``flash_attn_func(..., return_attn_probs=True)``.

    It takes q/k/v "B L H D" and returns ``(out "B Lq H D" in q's dtype, softmax_lse "B H Lq" float32
    natural log, S_dmask)``; S_dmask is None without dropout. FlashAttention-3 (the separate
    ``flash_attn_interface`` module) has another signature and return and is not used here.
    """
    out, lse, _ = FLASH_ATTN_ENTRY.function_of()(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        dropout_p=0.0,
        softmax_scale=scale,
        causal=False,
        return_attn_probs=True,
    )
    return out.transpose(1, 2), lse.float()


FLASH_HEAD_DIMS = tuple(range(8, 257, 8))
"""Head dims flash-attn 2's forward runs (its C++ check: at most 256, a multiple of 8); xformers' partial
attention runs on the same kernel."""


def _flash_supports(query: Tensor, head_dim: int) -> bool:
    """fp16/bf16 on an Ampere or newer CUDA GPU (flash-attn 2 refuses older ones), head dim in
    :data:`FLASH_HEAD_DIMS`."""
    return _half_on_cuda(query) and head_dim in FLASH_HEAD_DIMS and _ampere_or_newer(query)


def _sage_supports(query: Tensor, head_dim: int) -> bool:
    return _half_on_cuda(query) and head_dim in (64, 128)


def _half_on_cuda(query: Tensor) -> bool:
    return query.device.type == "cuda" and query.dtype in (torch.float16, torch.bfloat16)


def _ampere_or_newer(query: Tensor) -> bool:
    """True when ``query``'s CUDA device has compute capability 8.0 or more."""
    index = query.device.index
    return _capability(torch.cuda.current_device() if index is None else index) >= (8, 0)


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    """Compute capability of CUDA device ``index`` (asked once per device)."""
    return torch.cuda.get_device_capability(index)


# --- SageAttention 2 -----------------------------------------------------------------------------------


SAGE_ENTRY = LseEntry("sageattention", "sageattn", "return_lse")
"""SageAttention 2.x names ``return_lse``; 1.x's ``sageattn`` takes ``**kwargs`` and would swallow it,
returning the output alone."""


def _sage_lse(query: Tensor, key: Tensor, value: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """SageAttention 2's ``sageattn(..., return_lse=True)`` on "B H L D" (``tensor_layout="HND"``).

    It returns ``(out "B H Lq D" in q's dtype, lse "B H Lq" float32)``; the lse is already the natural log
    of the unquantized logits' denominator (SageAttention divides its kernel's log2 value by log2(e) and
    adds back the ``smooth_k`` shift ``q · mean(k) · sm_scale`` itself).
    """
    out, lse = SAGE_ENTRY.function_of()(
        query, key, value, tensor_layout="HND", is_causal=False, sm_scale=scale, return_lse=True
    )
    return out, lse.float()


# --- xformers ------------------------------------------------------------------------------------------


XFORMERS_ENTRY = LseEntry("xformers.ops.fmha", "memory_efficient_attention_partial", None)
"""xformers has ``memory_efficient_attention_partial`` from 0.0.25 on."""


def _xformers_lse(query: Tensor, key: Tensor, value: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """xformers' ``memory_efficient_attention_partial`` (xformers 0.0.25 and later).

    It takes q/k/v "B L H D" (BMHK) and returns ``(out "B Lq H D", lse "B H Lq" float32 natural log)``.
    Its output dtype defaults to float32 for partial attention (``Inputs.get_output_dtype``; the flash
    operator writes q's dtype anyway): ``out`` is returned in ``query``'s dtype, as every kernel here does.
    """
    out, lse = XFORMERS_ENTRY.function_of()(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scale=scale
    )
    return out.transpose(1, 2).to(query.dtype), lse.float()


def _xformers_supports(query: Tensor, head_dim: int) -> bool:
    """Where xformers has a forward operator for partial attention: its flash operator (fp16/bf16,
    compute capability 8.0+, head dims of flash-attn 2), or CK on ROCm. Its cutlass operator, the one
    for float32 and older GPUs, has no partial attention (``SUPPORTS_PARTIAL`` is False)."""
    if not _half_on_cuda(query) or head_dim not in FLASH_HEAD_DIMS:
        return False
    return torch.version.hip is not None or _ampere_or_newer(query)


LSE_KERNELS: dict[str, LseKernel] = {
    "torch": LseKernel(
        "torch",
        _torch_sdpa_lse,
        _torch_supports,
        run_biased=_torch_cpu_flash if _cpu_flash_takes_mask() else None,
        bias_devices=("cpu",),
        key_block=CPU_FLASH_KEY_BLOCK,
        key_block_devices=("cpu",),
    ),
    "flash_attn": LseKernel(
        "flash_attn", _flash_attn_lse, _flash_supports, head_dims=FLASH_HEAD_DIMS, entry=FLASH_ATTN_ENTRY
    ),
    "sage": LseKernel(
        "sage", _sage_lse, _sage_supports, head_dims=(64, 128), quantized=True, entry=SAGE_ENTRY
    ),
    "xformers": LseKernel(
        "xformers", _xformers_lse, _xformers_supports, head_dims=FLASH_HEAD_DIMS, entry=XFORMERS_ENTRY
    ),
}
"""LSE kernels by name. A host maps its attention backend to one of these (torch is always there)."""
