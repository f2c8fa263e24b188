"""The override's backend table inside a real ComfyUI: every core backend maps to an LSE kernel that runs.

Judged against ComfyUI itself: the backend function names come from ``comfy.ldm.modules.attention``
(a renamed backend would fall out of the table), and the chosen kernel's output and log-sum-exp are
compared with a float64 softmax computed here. Which library kernel the table picks (or PyTorch's, said once,
when the library is missing or too old for its log-sum-exp entry) is decided with stand-in modules in
``sys.modules``, since flash-attn, SageAttention and xformers only install with CUDA.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import math
import sys
import types

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


# --- which kernel the table picks, with stand-in libraries -------------------------------------------------
# The libraries only install with CUDA; stand-in modules with the entry points' real signatures (see
# tests/unit/test_lse_kernels.py for the sources and for the kernels' arithmetic) decide the choice here.


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
    module.__path__ = []
    module.__dict__.update(attributes)
    return module


def sageattn_2(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs):
    raise AssertionError("choosing a kernel must not run it")


def sageattn_1(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, smooth_k=True, **kwargs):
    raise AssertionError("choosing a kernel must not run it")


def flash_attn_func_2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, return_attn_probs=False):
    raise AssertionError("choosing a kernel must not run it")


def memory_efficient_attention_partial(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None):
    raise AssertionError("choosing a kernel must not run it")


def install(monkeypatch, library: str, variant: str) -> None:
    """Put a stand-in ``library`` in ``sys.modules``: variant "lse" (has the LSE entry), "old" (an older
    release without it) or "missing" (not importable)."""
    modules = {
        "sage": ["sageattention"],
        "flash_attn": ["flash_attn"],
        "xformers": ["xformers", "xformers.ops", "xformers.ops.fmha"],
    }[library]
    if variant == "missing":
        for name in modules:
            monkeypatch.setitem(sys.modules, name, None)
        return
    if library == "sage":
        function = sageattn_2 if variant == "lse" else sageattn_1
        monkeypatch.setitem(sys.modules, "sageattention", _module("sageattention", sageattn=function))
    elif library == "flash_attn":  # flash-attn 1.x exports no top-level flash_attn_func
        attributes = {"flash_attn_func": flash_attn_func_2} if variant == "lse" else {}
        monkeypatch.setitem(sys.modules, "flash_attn", _module("flash_attn", **attributes))
    else:  # xformers before 0.0.25 has no memory_efficient_attention_partial
        attributes = {"memory_efficient_attention_partial": memory_efficient_attention_partial}
        fmha = _module("xformers.ops.fmha", **(attributes if variant == "lse" else {}))
        ops = _module("xformers.ops", fmha=fmha)
        monkeypatch.setitem(sys.modules, "xformers", _module("xformers", ops=ops))
        monkeypatch.setitem(sys.modules, "xformers.ops", ops)
        monkeypatch.setitem(sys.modules, "xformers.ops.fmha", fmha)


@pytest.fixture
def fresh_table(backends):
    """``lse_kernel_for`` is cached per process: start and end each test with an empty cache."""
    backends.lse_kernel_for.cache_clear()
    yield backends
    backends.lse_kernel_for.cache_clear()


LIBRARY_BACKENDS = [
    ("attention_sage", "sage"),
    ("attention_flash", "flash_attn"),
    ("attention_xformers", "xformers"),
]


@pytest.mark.parametrize(("backend", "library"), LIBRARY_BACKENDS)
def test_backend_gets_its_librarys_kernel_when_the_library_has_the_lse_entry(
    comfy_host, fresh_table, monkeypatch, caplog, backend, library
):
    install(monkeypatch, library, "lse")
    caplog.set_level(logging.INFO, logger=fresh_table.logger.name)
    assert fresh_table.lse_kernel_for(backend).name == library
    assert fresh_table.lse_kernel_for(backend).name == library
    chosen = [r for r in caplog.records if f"{backend} -> log-sum-exp kernel {library}" in r.getMessage()]
    assert len(chosen) == 1
    assert not [r for r in caplog.records if "no log-sum-exp entry point" in r.getMessage()]


@pytest.mark.parametrize("variant", ["old", "missing"])
@pytest.mark.parametrize(("backend", "library"), LIBRARY_BACKENDS)
def test_backend_falls_back_to_torch_once_without_the_lse_entry(
    comfy_host, fresh_table, monkeypatch, caplog, backend, library, variant
):
    """Not importable, or a release without the entry point (SageAttention 1.x without ``return_lse``,
    flash-attn 1.x, xformers before 0.0.25): PyTorch's kernel, said once however often it is asked."""
    install(monkeypatch, library, variant)
    caplog.set_level(logging.INFO, logger=fresh_table.logger.name)
    for _ in range(3):
        assert fresh_table.lse_kernel_for(backend).name == "torch"
    fallback = [r for r in caplog.records if "no log-sum-exp entry point" in r.getMessage()]
    assert len(fallback) == 1 and backend in fallback[0].getMessage()


def test_a_cpu_query_still_runs_on_torch_with_the_library_present(comfy_host, fresh_table, monkeypatch):
    """The chosen library kernel runs on CUDA half types only: a CPU query falls to PyTorch's."""
    install(monkeypatch, "flash_attn", "lse")
    query = torch.zeros(1, 2, 7, 16)
    assert fresh_table.lse_kernel_for("attention_flash").name == "flash_attn"
    assert fresh_table.usable_kernel("attention_flash", query, 16).name == "torch"
