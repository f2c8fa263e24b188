"""LSE kernels for the attention-path tests: a simulated int8 kernel, PyTorch's without its bias entry, and
PyTorch's with a hook before each call (to record or check what a path hands the kernel)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from customvideox_core.lse_attention import LSE_KERNELS, LseKernel


def quantize_per_block(tokens: torch.Tensor, block: int) -> torch.Tensor:
    """Symmetric int8 per block of ``block`` tokens per head (SageAttention's q/k scheme), dequantized."""
    batch, heads, length, dim = tokens.shape
    padded = -(-length // block) * block
    blocks = torch.nn.functional.pad(tokens.double(), (0, 0, 0, padded - length)).reshape(
        batch, heads, padded // block, block, dim
    )
    scale = blocks.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(1e-30) / 127.0
    return (torch.round(blocks / scale) * scale).reshape(batch, heads, padded, dim)[:, :, :length]


def simulated_int8(query, key, value, scale):
    """An LSE kernel that quantizes q (blocks of 128) and k (blocks of 64) to int8 first, float64 after."""
    logits = quantize_per_block(query, 128) @ quantize_per_block(key, 64).transpose(-1, -2) * scale
    lse = torch.logsumexp(logits, dim=-1)
    out = torch.softmax(logits, dim=-1) @ value.double()
    return out.to(query.dtype), lse.float()


SIMULATED_INT8 = LseKernel("int8-sim", simulated_int8, lambda q, k: True, head_dims=(64, 128), quantized=True)
TORCH_WITHOUT_BIAS = LseKernel("torch-no-bias", LSE_KERNELS["torch"].run, LSE_KERNELS["torch"].supports)
"""PyTorch's kernel without its bias entry: the small reference part carries the bias as extra head dims."""


def torch_kernel_calling(
    on_plain: Callable[[torch.Tensor, torch.Tensor], object],
    on_biased: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object] | None = None,
    *,
    key_block: int | None = None,
) -> LseKernel:
    """PyTorch's CPU LSE kernel, calling ``on_plain(query, key)`` before each plain call and
    ``on_biased(query, key, bias)`` before each call with a bias mask (no bias entry when None); query/key
    "B H L D". ``key_block``: keys per block on the CPU (None: not blocked)."""
    torch_kernel = LSE_KERNELS["torch"]

    def plain(query, key, value, scale):
        on_plain(query, key)
        return torch_kernel.run(query, key, value, scale)

    def biased(query, key, value, scale, bias):
        assert on_biased is not None
        on_biased(query, key, bias)
        return torch_kernel.run_biased(query, key, value, scale, bias)

    return LseKernel(
        "recording",
        plain,
        lambda q, k: True,
        run_biased=None if on_biased is None else biased,
        bias_devices=("cpu",),
        key_block=key_block,
        key_block_devices=("cpu",),
    )


def recording_kernel(calls: list) -> LseKernel:
    """PyTorch's CPU LSE kernel appending ``("plain", D, keys)`` and ``("biased", D, keys, bias shape,
    bias dtype)`` to ``calls`` before each call."""
    return torch_kernel_calling(
        lambda query, key: calls.append(("plain", query.shape[-1], key.shape[2])),
        lambda query, key, bias: calls.append(
            ("biased", query.shape[-1], key.shape[2], tuple(bias.shape), bias.dtype)
        ),
    )
