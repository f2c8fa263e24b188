"""Contract tests of the three LSE kernels that wrap a CUDA-only library: flash-attn, SageAttention 2, xformers.

None of the libraries installs on a CPU-only machine, so each test installs a fake module in
``sys.modules`` that implements the library's entry point with the library's own layout, keywords,
return shapes, dtypes and log base (as its source says, below), computing a plain float64 softmax. The
fakes name their parameters exactly (no ``**kwargs``) and refuse what the library refuses where it
matters here (a wrong layout shows up as mismatched shapes, too large a head dim, dropout, a mask),
so a wrong transpose, keyword, lse shape or log base in a wrapper fails these tests. The fakes run on the
CPU in any float dtype: the device and dtype limits live in the kernels' ``supports`` instead (tested
below with stand-in tensors).

What the fakes follow (sources read at the tags and commits named; no code copied):

- flash-attn 2, ``Dao-AILab/flash-attention`` tag v2.8.3 (060c9188), ``flash_attn/flash_attn_interface.py``:
  ``flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False)`` (line 1135) takes
  q/k/v "B L H D" (k/v heads may divide q's heads, GQA) and, with ``return_attn_probs``, returns
  ``(out "B Lq H D", softmax_lse "B H Lq", S_dmask)`` (docstring from line 1189); ``FlashAttnFunc.forward``
  asks the kernel for the probabilities only when dropout_p > 0 (line 845), so S_dmask is None here, and
  pads head dims to a multiple of 8 itself. ``csrc/flash_attn/flash_api.cpp``: lse allocated float32
  ``{batch, heads, seqlen_q}`` (line 441, no padding), head dim at most 256 (line 393), Ampere or newer.
  ``csrc/flash_attn/src/softmax.h`` line 180: lse = row max · scale + log(sum), the natural log. v2.0.0
  (4f285b35) already had ``return_attn_probs`` and the same return; 1.x (v1.0.9) exports no top-level
  ``flash_attn_func`` (its ``flash_attn_interface.flash_attn_func`` takes packed qkv and cu_seqlens).
  FlashAttention-3 (``hopper/flash_attn_interface.py``, a separate ``flash_attn_interface`` module of the
  ``flash_attn_3`` package, not ``flash_attn``) has no dropout_p and returns ``(out, lse)`` only since
  commit 203b9b3d (2025-08-29), ``out`` alone from 7a802796 (2025-01-07) until then; ComfyUI's
  ``attention_flash`` imports flash-attn 2's ``from flash_attn import flash_attn_func``.
- SageAttention 2, ``thu-ml/SageAttention`` tag v2.2.0 (eb615cf6), ``sageattention/core.py``:
  ``sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False, **kwargs)``
  (lines 79-87); "HND" is q "B H Lq D", k/v "B Hkv Lk D" ("NHD" is "B L H D"); the returned lse is
  ``[batch, qo_heads, qo_len]`` (line 133) float32 (allocated so in ``sm80/89/90_compile.py`` and the
  triton kernels). Every per-architecture function ends (lines 327, 629, 822, 992) by dividing the
  kernel's log2-domain lse by 1.44269504 (log2 e: the natural log) and, with ``smooth_k`` (default True),
  adding the correction ``q · mean_k(k) · sm_scale`` (lines 279-293) for the key mean it subtracted
  before quantizing: the lse is that of the unquantized logits, no correction is left to the caller. Head
  dims below 128 are zero-padded to 64 or 128, above 128 refused (ValueError); out comes back in q's
  dtype and layout. ``return_lse`` arrived with 2.0 (commit d847a8f, 2024-11-17; tag v2.0.1, fa1d103d,
  has the same returns); 1.0.5's ``sageattn`` has no ``return_lse`` but ``**kwargs``, which would
  swallow the keyword and return the output alone (hence the signature check in
  ``nodes/attention_backends.py``). The fake takes no ``**kwargs``, stricter than the library, so a
  misspelt keyword fails here instead of being ignored.
- xformers, ``facebookresearch/xformers`` tag v0.0.32 (ac006414), ``xformers/ops/fmha/__init__.py``:
  ``memory_efficient_attention_partial(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None,
  output_dtype=None)`` (lines 584-622) returns ``(out, lse)``; query BMHK "B Mq H K", key/value
  "B Mkv H K/Kv" (``common.py`` ``Inputs.validate_inputs``, ValueError on other shapes), p != 0 raises.
  ``flash.py`` ``_post_process_lse`` (from line 562): without a variable-length bias the lse is the
  kernel's ``[B, H, Mq]`` float32, unpadded. ``common.py`` line 329: partial attention outputs float32
  unless the query is float64 (the flash operator itself writes q's dtype). Only operators with
  ``SUPPORTS_PARTIAL`` take partial attention (``common.py`` lines 400, 472): flash (fp16/bf16, compute
  capability 8.0+, head dim at most 256, ``flash.py`` lines 604-607, 636), flash3, triton split-k, CK
  (ROCm); the cutlass operator, xformers' choice for float32 and older GPUs, has none. The function
  arrived in commit fe0526ba (2024-03-01), first tag v0.0.25; on master (ca6d2aa0, 2026-04) it is
  re-exported from the ``mslk`` package under the same name.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from test_reference_paths import HEADS, LAYOUT, WEIGHTS, make_step, oracle, qkv

from customvideox_core import lse_attention
from customvideox_core.attention import sdpa_attention
from customvideox_core.lse_attention import LSE_KERNELS, merge_partial_attention
from customvideox_core.reference_attention import reference_self_attention

NAMES = ["flash_attn", "sage", "xformers"]
BATCH, QUERIES, KEYS, DIM = 2, 7, 5, 16
"""Query and key lengths differ from each other and from HEADS, so a missing transpose changes shapes."""
KERNEL_HEADS = 3
SCALE = 0.37


def dense_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float):
    """Float64 softmax attention written out: "B H Lq D", "B H Lk D" -> (out "B H Lq D", lse "B H Lq")."""
    q, k, v = (t.double() for t in (query, key, value))
    logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    row_max = logits.amax(dim=-1, keepdim=True)
    weights = torch.exp(logits - row_max)
    total = weights.sum(dim=-1, keepdim=True)
    lse = (row_max + torch.log(total)).squeeze(-1)
    out = torch.einsum("bhqk,bhkd->bhqd", weights / total, v)
    return out, lse


def _repeat_kv_heads(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """ "B H L D" keys/values with fewer heads repeated to the query's heads (GQA), as the libraries allow."""
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % kv_heads:
        raise RuntimeError(f"number of query heads ({heads}) must be divisible by the key heads ({kv_heads})")
    repeat = heads // kv_heads
    return key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)


def _check_same_dtype_contiguous_last_dim(*tensors: torch.Tensor) -> None:
    if len({t.dtype for t in tensors}) != 1:
        raise RuntimeError("query, key and value must have the same dtype")
    if any(t.stride(-1) != 1 for t in tensors):
        raise RuntimeError("last dim of q, k, v must be contiguous")


# --- the fakes ------------------------------------------------------------------------------------------


@dataclass
class Calls:
    """What a fake was called with: the key length (in the library's layout) of each call."""

    key_lengths: list[int] = field(default_factory=list)


def _module(name: str, **attributes) -> types.ModuleType:
    """A module with a spec (so ``importlib.util.find_spec`` finds it in ``sys.modules``)."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
    module.__path__ = []
    module.__dict__.update(attributes)
    return module


def install_flash_attn(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()

    def flash_attn_func(
        q,
        k,
        v,
        dropout_p=0.0,
        softmax_scale=None,
        causal=False,
        window_size=(-1, -1),
        softcap=0.0,
        alibi_slopes=None,
        deterministic=False,
        return_attn_probs=False,
    ):
        """flash-attn 2: q "B Lq H D", k/v "B Lk Hkv D"; (out "B Lq H D", lse "B H Lq" float32, None)."""
        if q.ndim != 4 or k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[-1] != q.shape[-1]:
            raise RuntimeError(
                f"flash-attn: bad shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        _check_same_dtype_contiguous_last_dim(q, k, v)
        if q.shape[-1] > 256:
            raise RuntimeError("FlashAttention forward only supports head dimension at most 256")
        if (
            dropout_p != 0.0
            or causal
            or tuple(window_size) != (-1, -1)
            or softcap
            or alibi_slopes is not None
        ):
            raise NotImplementedError("the fake covers plain attention only")
        calls.key_lengths.append(k.shape[1])
        scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
        query, key, value = (t.transpose(1, 2) for t in (q, k, v))
        key, value = _repeat_kv_heads(query, key, value)
        out, lse = dense_attention(query, key, value, scale)
        out = out.transpose(1, 2).to(q.dtype)
        return (out, lse.float(), None) if return_attn_probs else out

    monkeypatch.setitem(sys.modules, "flash_attn", _module("flash_attn", flash_attn_func=flash_attn_func))
    return calls


def install_sage(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()

    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False):
        """SageAttention 2: "HND" q "B H Lq D", k/v "B Hkv Lk D" ("NHD": "B L H D"); out in q's layout
        and dtype, lse "B H Lq" float32 natural log (already corrected for smooth_k)."""
        if tensor_layout not in ("HND", "NHD"):
            raise ValueError(f"tensor_layout {tensor_layout} not supported")
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if q.ndim != 4 or k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[-1] != q.shape[-1]:
            raise RuntimeError(f"sage: bad shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        _check_same_dtype_contiguous_last_dim(q, k, v)
        if q.shape[-1] > 128:
            raise ValueError(f"Unsupported head_dim: {q.shape[-1]}")
        if is_causal:
            raise NotImplementedError("the fake covers non-causal attention only")
        calls.key_lengths.append(k.shape[2])
        scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
        key, value = _repeat_kv_heads(q, k, v)
        out, lse = dense_attention(q, key, value, scale)
        out = out.to(q.dtype)
        if tensor_layout == "NHD":
            out = out.transpose(1, 2)
        return (out, lse.float()) if return_lse else out

    monkeypatch.setitem(sys.modules, "sageattention", _module("sageattention", sageattn=sageattn))
    return calls


def install_xformers(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()

    def memory_efficient_attention_partial(
        query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None, output_dtype=None
    ):
        """xformers: BMHK query "B Mq H K", key/value "B Mkv H K"; (out "B Mq H Kv", lse "B H Mq" float32);
        out float32 unless the query is float64 or ``output_dtype`` says otherwise."""
        if p != 0.0:
            raise NotImplementedError("dropout is not supported.")
        if attn_bias is not None or op is not None:
            raise NotImplementedError("the fake covers attention without a bias, on the default operator")
        if query.ndim != 4:
            raise NotImplementedError("the fake covers BMHK inputs only")
        batch, _, heads, dim = query.shape
        keys = key.shape[1]
        if key.shape != (batch, keys, heads, dim) or value.shape[:3] != (batch, keys, heads):
            raise ValueError(
                f"Incompatible shapes for attention inputs: query {tuple(query.shape)}, key "
                f"{tuple(key.shape)}, value {tuple(value.shape)}"
            )
        _check_same_dtype_contiguous_last_dim(query, key, value)
        calls.key_lengths.append(keys)
        softmax_scale = dim**-0.5 if scale is None else scale
        out, lse = dense_attention(*(t.transpose(1, 2) for t in (query, key, value)), softmax_scale)
        if output_dtype is None:
            output_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
        return out.transpose(1, 2).to(output_dtype), lse.float()

    fmha = _module("xformers.ops.fmha", memory_efficient_attention_partial=memory_efficient_attention_partial)
    ops = _module("xformers.ops", fmha=fmha)
    monkeypatch.setitem(sys.modules, "xformers", _module("xformers", ops=ops))
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    monkeypatch.setitem(sys.modules, "xformers.ops.fmha", fmha)
    return calls


INSTALL: dict[str, Callable[[pytest.MonkeyPatch], Calls]] = {
    "flash_attn": install_flash_attn,
    "sage": install_sage,
    "xformers": install_xformers,
}


def on_cpu(name: str) -> lse_attention.LseKernel:
    """The table's kernel with a ``supports`` that admits the CPU (the fakes run there)."""
    return dataclasses.replace(LSE_KERNELS[name], supports=lambda query, head_dim: True)


def random_qkv(dtype=torch.float32, keys=KEYS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [
        (BATCH, KERNEL_HEADS, QUERIES, DIM),
        (BATCH, KERNEL_HEADS, keys, DIM),
        (BATCH, KERNEL_HEADS, keys, DIM),
    ]
    return [torch.randn(shape, generator=generator).to(dtype) for shape in shapes]


# --- (a) each wrapper against the float64 oracle -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_the_float64_oracle(monkeypatch, name):
    """out "B H Lq D" in the query's dtype, lse "B H Lq" float32 natural log, at a non-default scale."""
    calls = INSTALL[name](monkeypatch)
    query, key, value = random_qkv()
    out, lse = LSE_KERNELS[name].run(query, key, value, SCALE)
    expected_out, expected_lse = dense_attention(query, key, value, SCALE)
    assert out.shape == (BATCH, KERNEL_HEADS, QUERIES, DIM) and out.dtype == torch.float32
    assert lse.shape == (BATCH, KERNEL_HEADS, QUERIES) and lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.double(), expected_out, atol=1e-5, rtol=0)
    assert calls.key_lengths == [KEYS]


@pytest.mark.parametrize("name", NAMES)
def test_kernel_returns_the_query_dtype_for_half_inputs(monkeypatch, name):
    """bfloat16 in, bfloat16 out (xformers' partial attention would hand back float32), lse float32."""
    INSTALL[name](monkeypatch)
    query, key, value = random_qkv(torch.bfloat16, seed=1)
    out, lse = LSE_KERNELS[name].run(query, key, value, SCALE)
    expected_out, expected_lse = dense_attention(query, key, value, SCALE)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.double(), expected_out, atol=2e-2, rtol=0)


# --- (b) two disjoint key sets merge to attention over all keys --------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_two_calls_over_disjoint_keys_merge_to_attention_over_all_keys(monkeypatch, name):
    INSTALL[name](monkeypatch)
    query, key, value = random_qkv(keys=11, seed=2)
    split = 4
    kernel = LSE_KERNELS[name]
    out_a, lse_a = kernel.run(query, key[:, :, :split], value[:, :, :split], SCALE)
    out_b, lse_b = kernel.run(query, key[:, :, split:], value[:, :, split:], SCALE)
    merged = merge_partial_attention(out_a, lse_a, out_b, lse_b)
    expected, _ = dense_attention(query, key, value, SCALE)
    torch.testing.assert_close(merged.double(), expected, atol=1e-5, rtol=0)


# --- (c) reference_self_attention on each kernel ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sees", [[True, False, True], [True, True]])
def test_reference_self_attention_on_the_kernel_matches_the_oracle(monkeypatch, name, sees):
    """The lse-merge path with the kernel, against test_reference_paths' entry-by-entry float64 oracle.

    Sage quantizes q and k: its small biased reference part runs on PyTorch's kernel, so the fake sage
    sees the text + video keys only. flash-attn and xformers run both parts.
    """
    calls = INSTALL[name](monkeypatch)
    query, key, value = qkv(len(sees), seed=5)
    step = make_step(sees, weights=WEIGHTS)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=on_cpu(name)
    )
    expected = oracle(
        query, key, value, tab=1.5, weights=WEIGHTS.tolist(), sees=sees, kept=[True] * 8,
        term_frames=[[0, 1]], activation=None, gamma=0.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)
    context = LAYOUT.text + LAYOUT.video
    if name == "sage":
        assert calls.key_lengths == [context]
    else:
        assert calls.key_lengths == [context, LAYOUT.reference]


def test_reference_self_attention_with_non_default_scale_on_each_kernel(monkeypatch):
    """The model's own softmax scale reaches every kernel: all three agree with PyTorch's at scale 0.2."""
    for name in NAMES:
        INSTALL[name](monkeypatch)
    query, key, value = qkv(1, seed=6)
    step = make_step([True], weights=WEIGHTS)
    expected = reference_self_attention(
        query,
        key,
        value,
        HEADS,
        step,
        attention_fn=sdpa_attention,
        lse_kernel=LSE_KERNELS["torch"],
        scale=0.2,
    )
    for name in NAMES:
        got = reference_self_attention(
            query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=on_cpu(name), scale=0.2
        )
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=0, msg=name)


# --- the fakes refuse what the libraries refuse ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["flash_attn", "xformers"])
def test_fakes_refuse_the_head_major_layout(monkeypatch, name):
    """A wrapper that forgot its transposes would hand "B H L D" to a "B L H D" library: refused."""
    INSTALL[name](monkeypatch)
    query, key, value = random_qkv()
    with pytest.raises((RuntimeError, ValueError)):
        if name == "flash_attn":
            sys.modules["flash_attn"].flash_attn_func(query, key, value, return_attn_probs=True)
        else:
            sys.modules["xformers.ops.fmha"].memory_efficient_attention_partial(query, key, value)


def test_fakes_refuse_unknown_keywords(monkeypatch):
    for name in NAMES:
        INSTALL[name](monkeypatch)
    query, key, value = random_qkv()
    with pytest.raises(TypeError):
        sys.modules["sageattention"].sageattn(query, key, value, return_lse=True, scale=SCALE)
    with pytest.raises(TypeError):
        sys.modules["flash_attn"].flash_attn_func(query, key, value, scale=SCALE)
    with pytest.raises(TypeError):
        sys.modules["xformers.ops.fmha"].memory_efficient_attention_partial(
            query, key, value, softmax_scale=SCALE
        )
    with pytest.raises(ValueError, match="Unsupported head_dim"):
        wide = torch.zeros(1, 1, 2, 136)
        sys.modules["sageattention"].sageattn(wide, wide, wide, return_lse=True)


# --- where each kernel runs ---------------------------------------------------------------------------------------


def stand_in(dtype: torch.dtype, device: str = "cuda:0") -> types.SimpleNamespace:
    """What ``supports`` reads of a query (device, dtype), without a GPU."""
    return types.SimpleNamespace(device=torch.device(device), dtype=dtype)


@pytest.mark.parametrize("name", ["flash_attn", "xformers"])
def test_flash_and_xformers_run_half_types_on_ampere_or_newer_at_flash_head_dims(monkeypatch, name):
    """flash-attn 2 and xformers' partial attention (its flash operator) need fp16/bf16, compute
    capability 8.0+ and a head dim of at most 256 (a multiple of 8)."""
    supports = LSE_KERNELS[name].supports
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(lse_attention, "_capability", lambda index: (8, 0))
    assert supports(stand_in(torch.float16), 128) and supports(stand_in(torch.bfloat16), 256)
    assert not supports(stand_in(torch.float32), 128)
    assert not supports(stand_in(torch.float16, "cpu"), 128)
    assert not supports(stand_in(torch.float16), 264)
    assert not supports(stand_in(torch.float16), 100)
    monkeypatch.setattr(lse_attention, "_capability", lambda index: (7, 5))
    assert not supports(stand_in(torch.float16), 128)
    assert LSE_KERNELS[name].padded_head_dim(128 + 1) == 136
    assert LSE_KERNELS[name].padded_head_dim(256 + 1) is None  # the small part then runs on PyTorch's


def test_xformers_partial_attention_runs_on_rocm_without_a_capability_check(monkeypatch):
    monkeypatch.setattr(torch.version, "hip", "6.2")
    monkeypatch.setattr(lse_attention, "_capability", lambda index: pytest.fail("no capability on ROCm"))
    assert LSE_KERNELS["xformers"].supports(stand_in(torch.bfloat16), 128)


def test_sage_runs_half_types_on_cuda_at_64_or_128():
    supports = LSE_KERNELS["sage"].supports
    assert supports(stand_in(torch.float16), 64) and supports(stand_in(torch.bfloat16), 128)
    assert not supports(stand_in(torch.float32), 128) and not supports(stand_in(torch.float16), 256)
    assert LSE_KERNELS["sage"].quantized


def test_capability_is_asked_once_per_device(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: asked.append(index) or (9, 0))
    lse_attention._capability.cache_clear()
    try:
        for _ in range(3):
            assert lse_attention._ampere_or_newer(stand_in(torch.float16, "cuda:1"))
        assert asked == [1]
    finally:
        lse_attention._capability.cache_clear()


def test_scale_is_not_the_default_one():
    """The tests above would not see a dropped scale if SCALE were 1/sqrt(DIM)."""
    assert not math.isclose(SCALE, DIM**-0.5)
