"""The override's backend table inside a real ComfyUI: every core backend maps to an LSE kernel that runs.

Judged against ComfyUI itself: the backend function names come from ``comfy.ldm.modules.attention``
(a renamed backend would fall out of the table), and the chosen kernel's output and log-sum-exp are
compared with a float64 softmax computed here.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch


@pytest.fixture(scope="module")
def backends(pack_module):
    return importlib.import_module(f"{pack_module.__name__}.nodes.attention_backends")


def test_every_table_entry_is_a_comfyui_backend(comfy_host, backends):
    attention = importlib.import_module("comfy.ldm.modules.attention")
    for name in backends.BACKEND_KERNELS:
        function = getattr(attention, name, None)
        assert callable(function), f"comfy.ldm.modules.attention has no backend {name}"
        assert backends.backend_name(function) == name  # wrap_attn keeps the name (functools.wraps)


@pytest.mark.parametrize(
    "name", ["attention_pytorch", "attention_sage", "attention_flash", "attention_unknown"]
)
def test_usable_kernel_on_cpu_is_exact(comfy_host, backends, name):
    """On the CPU every backend ends on a kernel that runs there (sage/flash need CUDA: PyTorch's)."""
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 2, 7, 16, generator=generator) for _ in range(3))
    kernel = backends.usable_kernel(name, query, 16)
    assert kernel is not None and kernel.name == "torch"
    out, lse = kernel.run(query, key, value, 0.3)
    logits = query.double() @ key.double().transpose(-1, -2) * 0.3
    torch.testing.assert_close(lse.double(), torch.logsumexp(logits, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.double(), torch.softmax(logits, -1) @ value.double(), atol=1e-5, rtol=0)
    assert math.isfinite(float(lse.max()))
