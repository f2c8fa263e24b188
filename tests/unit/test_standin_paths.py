"""Every path of Stand-In's video_self_attention against a float64 oracle written entry by entry.

Paths: the LSE merge on PyTorch's kernel (on the CPU: the reference part at the native head dim with the
bias as a mask), the LSE merge with the bias as extra head dims of the small part, the augmented fallback
and a simulated int8 kernel quantizing q and k per block as SageAttention does. Rows that see / do not see
the reference, the ERAE activation on the positive rows only, dropped reference keys, and no host read-back
inside an attention call.
"""

import math

import pytest
import torch
from kernel_doubles import (
    SIMULATED_INT8,
    TORCH_WITHOUT_BIAS,
    recording_kernel,
    simulated_int8,
    torch_kernel_calling,
)

from customvideox_core.attention import sdpa_attention
from customvideox_core.biased_paths import biased_rows_path
from customvideox_core.erae import ERAEConfig
from customvideox_core.lse_attention import LSE_KERNELS, LseKernel
from customvideox_core.standin.video_attention import plan_video_step, video_self_attention

HEADS, HEAD_DIM, VIDEO, REFERENCE = 2, 16, 12, 8
WEIGHTS = torch.tensor([1.0, 0.5, 0.0, 0.25, 0.75, 0.0, 1.0, 0.3])


def oracle(query, key, value, reference_key, reference_value, *, step_args, activation, heads=HEADS):
    """Dense float64 softmax, one query row at a time, the bias added logit by logit (docs/ARCHITECTURE.md,
    "The bias"), the softmax in plain floats.

    step_args: tab, weights (list), sees, cond (lists per row), kept (list per reference key), gamma.
    A row that sees the reference: video query i over video keys and the kept reference keys j, with
    ``tab · (1 + gamma · a_i) · m_j`` on j (``a_i`` only on cond rows). Other rows: video keys only.
    """
    tab, weights, sees = step_args["tab"], step_args["weights"], step_args["sees"]
    cond, kept, gamma = step_args["cond"], step_args["kept"], step_args["gamma"]
    batch, length, width = query.shape
    dim = width // heads
    q, k, v = (t.double().reshape(t.shape[0], t.shape[1], heads, dim) for t in (query, key, value))
    rk, rv = (t.double().reshape(t.shape[1], heads, dim) for t in (reference_key, reference_value))
    out = torch.zeros(batch, length, heads, dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                logits = (k[b, :, h] @ q[b, i, h] / math.sqrt(dim)).tolist()
                values = list(v[b, :, h])
                if sees[b]:
                    a = activation[b][i] if activation is not None and cond[b] else 0.0
                    reference_logits = (rk[:, h] @ q[b, i, h] / math.sqrt(dim)).tolist()
                    for j, logit in enumerate(reference_logits):
                        if kept[j]:
                            logits.append(logit + tab * (1.0 + gamma * a) * weights[j])
                            values.append(rv[j, h])
                peak = max(logits)
                exps = [math.exp(logit - peak) for logit in logits]
                total = sum(exps)
                out[b, i, h] = sum(e / total * value for e, value in zip(exps, values, strict=True))
    return out.reshape(batch, length, width)


KERNELS = {
    "augmented": None,
    "lse-merge, bias mask": LSE_KERNELS["torch"],
    "lse-merge, bias as head dims": TORCH_WITHOUT_BIAS,
}


def tokens(batch, *, seed=0, dtype=torch.float32, video=VIDEO, reference=REFERENCE, head_dim=HEAD_DIM):
    generator = torch.Generator().manual_seed(seed)
    width = HEADS * head_dim
    video_qkv = [torch.randn(batch, video, width, generator=generator, dtype=torch.float64) for _ in range(3)]
    reference_kv = [
        torch.randn(1, reference, width, generator=generator, dtype=torch.float64) for _ in range(2)
    ]
    return [t.to(dtype) for t in (*video_qkv, *reference_kv)]


def attend(tensors, step, lse_kernel, *, activation=None, attention_fn=sdpa_attention):
    """``video_self_attention`` on ``tensors`` = (query, key, value, reference_key, reference_value)."""
    return video_self_attention(
        *tensors, HEADS, step, attention_fn=attention_fn, activation=activation, lse_kernel=lse_kernel
    )


def oracle_of(tensors, sees, cond, *, tab, activation=None, **step_args):
    """The float64 oracle on the same ``tensors``; ``step_args`` as :func:`expected_args`'."""
    return oracle(*tensors, step_args=expected_args(sees, cond, tab=tab, **step_args), activation=activation)


def planned(sees, cond, *, tab, weights=WEIGHTS, erae=None):
    return plan_video_step(
        row_is_cond=cond, row_sees_reference=sees, tab_value=tab, reference_weights=weights, erae=erae
    )


def expected_args(sees, cond, *, tab, weights=WEIGHTS, gamma=0.0, blocked=False):
    values = weights.tolist()
    kept = [w > 0 for w in values] if blocked else [True] * len(values)
    return {"tab": tab, "weights": values, "sees": sees, "cond": cond, "kept": kept, "gamma": gamma}


@pytest.mark.parametrize("path", list(KERNELS))
@pytest.mark.parametrize(
    "sees, cond",
    [([True, False, True], [True, False, False]), ([True, True], [True, False]), ([False], [True])],
)
def test_row_groups_match_the_oracle(path, sees, cond):
    tensors = tokens(len(sees))
    got = attend(tensors, planned(sees, cond, tab=1.5), KERNELS[path])
    torch.testing.assert_close(got.double(), oracle_of(tensors, sees, cond, tab=1.5), atol=2e-5, rtol=0)


@pytest.mark.parametrize("path", list(KERNELS))
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_erae_on_positive_rows_and_dropped_keys_match_the_oracle(path, dtype, atol):
    """Row 0 positive (ERAE counts), row 1 negative and sees the reference, row 2 blind; keys blocked."""
    sees, cond = [True, True, False], [True, False, False]
    tensors = tokens(3, seed=1, dtype=dtype)
    erae = ERAEConfig(entity_positions=(1, 3), gamma=2.0, block_outside_mask=True)
    step = planned(sees, cond, tab=0.7, erae=erae)
    assert step.plan.kept_index is not None and step.plan.kept_index.shape == (6,)
    activation = torch.rand(3, VIDEO, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = attend(tensors, step, KERNELS[path], activation=activation.to(dtype))
    assert got.dtype == dtype
    expected = oracle_of(
        tensors,
        sees,
        cond,
        tab=0.7,
        gamma=2.0,
        blocked=True,
        activation=activation.to(dtype).double().tolist(),
    )
    torch.testing.assert_close(got.double(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("path", list(KERNELS))
def test_bfloat16_rows_stay_close_to_the_oracle(path):
    sees, cond = [True, False], [True, False]
    tensors = tokens(2, seed=3, dtype=torch.bfloat16)
    got = attend(tensors, planned(sees, cond, tab=3.0), KERNELS[path])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), oracle_of(tensors, sees, cond, tab=3.0), atol=6e-2, rtol=0)


def test_pytorchs_cpu_kernel_runs_the_reference_part_with_a_bias_mask_at_the_native_head_dim():
    calls = []
    assert LSE_KERNELS["torch"].takes_bias(torch.zeros(1))
    kernel = recording_kernel(calls)
    sees, cond = [True, False, True], [True, False, True]
    tensors = tokens(3, seed=4)
    got = attend(tensors, planned(sees, cond, tab=1.2), kernel)
    assert calls == [
        ("plain", HEAD_DIM, VIDEO),
        ("biased", HEAD_DIM, REFERENCE, (2, 1, VIDEO, REFERENCE), torch.float32),
    ]
    torch.testing.assert_close(got.double(), oracle_of(tensors, sees, cond, tab=1.2), atol=2e-5, rtol=0)


def test_the_augmented_fallback_is_one_backend_call_with_the_bias_as_head_dims():
    calls = []

    def backend(query, key, value):
        calls.append((query.shape[2], key.shape[2], query.shape[-1]))
        return sdpa_attention(query, key, value)

    attend(tokens(2, seed=5), planned([True, True], [True, False], tab=2.0), None, attention_fn=backend)
    assert calls == [(VIDEO, VIDEO + REFERENCE, 24)]  # head dim 16 + 1 factor, padded to 24


def test_a_blocked_kernel_runs_whole_blocks_and_the_rest_joins_the_biased_part():
    """13 video keys, blocks of 4: the kernel gets 12, the 13th joins the 8 reference keys, bias 0."""
    calls = []

    def biased(query, key, bias):
        calls.append(("biased", key.shape[2]))
        assert bool((bias[..., :1] == 0).all())

    kernel = torch_kernel_calling(
        lambda query, key: calls.append(("plain", key.shape[2])), biased, key_block=4
    )
    tensors = tokens(1, seed=6, video=13)
    got = attend(tensors, planned([True], [True], tab=1.5), kernel)
    assert calls == [("plain", 12), ("biased", 1 + REFERENCE)]
    torch.testing.assert_close(got.double(), oracle_of(tensors, [True], [True], tab=1.5), atol=2e-5, rtol=0)


def test_simulated_int8_kernel_keeps_the_bias_exact():
    """q and k quantized per block to int8 (as sage does) on the video keys; the biased reference part runs
    on PyTorch's kernel, so the result is as close to the oracle as the kernel's own unbiased attention is."""
    head_dim, video, reference = 64, 128, 32
    tensors = tokens(2, seed=7, dtype=torch.float64, video=video, reference=reference, head_dim=head_dim)
    query, key, value, reference_key, reference_value = tensors
    weights = torch.rand(reference, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    sees, cond = [True, False], [True, False]
    step = planned(sees, cond, tab=3.0, weights=weights)

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], HEADS, head_dim).transpose(1, 2)

    plain, _ = simulated_int8(split(query[1:]), split(key[1:]), split(value[1:]), 1.0 / math.sqrt(head_dim))
    blind_exact = oracle(
        query[1:], key[1:], value[1:], reference_key, reference_value,
        step_args=expected_args([False], [False], tab=0.0, weights=weights), activation=None,
    )  # fmt: skip
    unbiased_error = float((plain.transpose(1, 2).reshape(blind_exact.shape) - blind_exact).abs().max())
    got = attend(tensors, step, SIMULATED_INT8)
    exact = oracle_of(tensors, sees, cond, tab=3.0, weights=weights)
    biased_error = float((got[0] - exact[0]).abs().max())
    assert unbiased_error > 1e-4, "the simulated quantization must make a visible error"
    assert biased_error < 1.5 * unbiased_error, (biased_error, unbiased_error)
    exact_kernel = attend(tensors, step, LSE_KERNELS["torch"])
    assert float((exact_kernel - exact).abs().max()) < 1e-6  # weights are stored in float32


def test_no_host_read_back_per_attention_call(monkeypatch):
    """Everything a call decides is on the step's plan: no .item(), bool(), float() or .tolist(); and the
    kernel is taken as the caller decided it (``supports`` is not asked again)."""
    query, key, value, reference_key, reference_value = tokens(3, seed=9)
    erae = ERAEConfig(entity_positions=(1,), gamma=1.0, block_outside_mask=True)
    step = planned([True, False, True], [True, False, False], tab=1.5, erae=erae)
    assert step.plan is step.plan  # planned once per model call, before its attention calls
    activation = torch.rand(3, VIDEO)

    def refuse(*args, **kwargs):
        raise AssertionError("host read-back inside an attention call")

    def never_asked(query, head_dim):
        raise AssertionError("the core must not decide again whether the kernel runs")

    kernels = [
        *KERNELS.values(),
        SIMULATED_INT8,
        LseKernel("checked", LSE_KERNELS["torch"].run, never_asked, run_biased=LSE_KERNELS["torch"].run_biased,
                  bias_devices=("cpu",)),
    ]  # fmt: skip
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for kernel in kernels:
        video_self_attention(
            query, key, value, reference_key, reference_value, HEADS, step,
            attention_fn=sdpa_attention, activation=activation, lse_kernel=kernel,
        )  # fmt: skip


def test_biased_rows_path_of_a_stand_in_step():
    assert biased_rows_path(planned([True], [True], tab=1.0).plan, LSE_KERNELS["torch"]) == "lse-merge"
    assert biased_rows_path(planned([True], [True], tab=1.0).plan, None) == "augmented"
    assert biased_rows_path(planned([True], [True], tab=0.0).plan, LSE_KERNELS["torch"]) is None
    assert biased_rows_path(planned([False], [True], tab=1.0).plan, None) is None
    assert biased_rows_path(planned([True], [True], tab=1.0, weights=torch.zeros(8)).plan, None) is None


def test_tab_zero_runs_one_plain_call_over_all_keys():
    calls = []

    def backend(query, key, value):
        calls.append((key.shape[2], query.shape[-1]))
        return sdpa_attention(query, key, value)

    query, key, value, reference_key, reference_value = tokens(1)
    step = planned([True], [True], tab=0.0)
    video_self_attention(
        query, key, value, reference_key, reference_value, HEADS, step,
        attention_fn=backend, lse_kernel=LSE_KERNELS["torch"],
    )  # fmt: skip
    assert calls == [(VIDEO + REFERENCE, HEAD_DIM)]


@pytest.mark.parametrize("path", list(KERNELS))
def test_a_float32_cache_with_dropped_keys_runs_as_the_cast_reference(path):
    """The cache keeps the reference in float32 while the video runs in bfloat16 and keys outside the mask
    are dropped: the kept keys are selected in the cache's dtype, then cast; the result equals the call
    on the reference cast to bfloat16 first, and the float64 oracle on those bfloat16 values."""
    tensors = tokens(2, seed=5)
    video, cached = [t.to(torch.bfloat16) for t in tensors[:3]], tensors[3:]
    erae = ERAEConfig(entity_positions=(), gamma=0.0, block_outside_mask=True)
    step = planned([True, False], [True, False], tab=1.5, erae=erae)
    assert step.plan.kept_index is not None
    got = attend([*video, *cached], step, KERNELS[path])
    cast_first = [*video, *(t.to(torch.bfloat16) for t in cached)]
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, attend(cast_first, step, KERNELS[path]))
    expected = oracle_of(cast_first, [True, False], [True, False], tab=1.5, blocked=True)
    torch.testing.assert_close(got.double(), expected, atol=3e-2, rtol=0)


def test_row_flags_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="one per batch row"):
        planned([True, False], [True], tab=1.0)
