"""Every path of reference_self_attention against a float64 oracle written entry by entry.

Paths: the LSE merge (PyTorch's CPU flash op, and a simulated int8 kernel quantizing q and k per block
as SageAttention does) and the augmented-head-dim fallback; row groups (rows that see / do not see the
reference, in any order), dropped reference keys, several subjects bound to their own reference frames.
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
from customvideox_core.erae import ERAEConfig, SubjectWords
from customvideox_core.layout import TokenLayout
from customvideox_core.lse_attention import (
    LSE_KERNELS,
    merge_partial_attention,
    whole_block_keys,
)
from customvideox_core.reference_attention import (
    ReferenceStep,
    check_sequence,
    plan_step,
    reference_self_attention,
)
from customvideox_core.tab import TABSchedule

HEADS, HEAD_DIM = 2, 16
LAYOUT = TokenLayout.cogvideox(text=5, frames=2, reference_frames=2, frame_tokens=4)


def oracle(query, key, value, *, tab, weights, sees, kept, term_frames, activation, gamma, layout=LAYOUT):
    """Dense float64 softmax, one logit at a time, docs/ARCHITECTURE.md's bias ("The bias"); dropped keys removed outright.

    activation: [B][video][K] floats or None; term_frames: K lists of reference frames of ``layout``
    (``HEADS`` heads of ``HEAD_DIM``). The video and the reference start where ``layout`` puts them (the
    reference after the video, or in front of it).
    A row that does not see the reference: text/video queries attend to text/video keys only, each
    reference query to itself only.
    """
    batch, length, _ = query.shape
    q, k, v = (t.double().reshape(batch, length, HEADS, HEAD_DIM) for t in (query, key, value))
    out = torch.zeros(batch, length, HEADS, HEAD_DIM, dtype=torch.float64)
    video, start = layout.video_slice.start, layout.reference_slice.start
    for b in range(batch):
        for h in range(HEADS):
            logits = q[b, :, h] @ k[b, :, h].T / math.sqrt(HEAD_DIM)
            for i in range(layout.video):
                for j in range(layout.reference):
                    frame = j // layout.frame_tokens
                    for term, frames in enumerate(term_frames):
                        if frame in frames:
                            a = 0.0 if activation is None else activation[b][i][term]
                            logits[video + i, start + j] += tab * (1 + gamma * a) * weights[j]
            for j in range(layout.reference):
                if not sees[b] or not kept[j]:
                    logits[:, start + j] = -math.inf
            if not sees[b]:
                for j in range(layout.reference):
                    logits[start + j] = -math.inf
                    logits[start + j, start + j] = 0.0
            out[b, :, h] = torch.softmax(logits, dim=-1) @ v[b, :, h]
    return out.reshape(batch, length, HEADS * HEAD_DIM)


KERNELS = {
    "augmented": None,
    "lse-merge": LSE_KERNELS["torch"],
    "lse-merge, bias as head dims": TORCH_WITHOUT_BIAS,
}


def qkv(batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, LAYOUT.total, HEADS * HEAD_DIM, generator=generator) for _ in range(3)]


def make_step(sees, *, weights, tab=1.5, erae=None, entities=None):
    return plan_step(
        LAYOUT,
        tab=TABSchedule(shape="constant", peak=tab),
        progress=0.4,
        row_sees_reference=sees,
        row_has_entities=entities if entities is not None else sees,
        reference_weights=weights,
        erae=erae,
    )


WEIGHTS = torch.tensor([1.0, 0.5, 0.0, 0.25, 0.75, 0.0, 1.0, 0.3])


@pytest.mark.parametrize("path", list(KERNELS))
@pytest.mark.parametrize("sees", [[True, False, True], [False, True], [True, True], [False, False]])
def test_row_groups_match_oracle(path, sees):
    query, key, value = qkv(len(sees))
    step = make_step(sees, weights=WEIGHTS)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=KERNELS[path]
    )
    expected = oracle(
        query, key, value, tab=1.5, weights=WEIGHTS.tolist(), sees=sees, kept=[True] * 8,
        term_frames=[[0, 1]], activation=None, gamma=0.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("path", list(KERNELS))
def test_dropped_keys_and_erae_activation_match_oracle(path):
    query, key, value = qkv(2, seed=1)
    erae = ERAEConfig(entity_positions=(1, 3), gamma=2.0, block_outside_mask=True)
    step = make_step([True, False], weights=WEIGHTS, erae=erae)
    assert step.plan.kept_count == 6
    generator = torch.Generator().manual_seed(2)
    activation = torch.rand(2, LAYOUT.video, 1, generator=generator) * torch.tensor([1.0, 0.0])[:, None, None]
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, activation=activation,
        lse_kernel=KERNELS[path],
    )  # fmt: skip
    expected = oracle(
        query, key, value, tab=1.5, weights=WEIGHTS.tolist(), sees=[True, False],
        kept=[w > 0 for w in WEIGHTS.tolist()], term_frames=[[0, 1]], activation=activation.tolist(),
        gamma=2.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("path", list(KERNELS))
def test_two_subjects_bias_only_their_own_frames(path):
    """Subject 1 bound to frame 0, subject 2 to frame 1: a rank-2 bias, each term with its activation."""
    query, key, value = qkv(1, seed=3)
    erae = ERAEConfig(
        gamma=1.5, subjects=(SubjectWords(0, (1,)), SubjectWords(1, (2, 4))), block_outside_mask=False
    )
    step = make_step([True], weights=WEIGHTS, erae=erae)
    assert step.plan.term_positions == ((1,), (2, 4))
    generator = torch.Generator().manual_seed(4)
    activation = torch.rand(1, LAYOUT.video, 2, generator=generator)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, activation=activation,
        lse_kernel=KERNELS[path],
    )  # fmt: skip
    expected = oracle(
        query, key, value, tab=1.5, weights=WEIGHTS.tolist(), sees=[True], kept=[True] * 8,
        term_frames=[[0], [1]], activation=activation.tolist(), gamma=1.5,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


def test_unbound_frames_keep_the_unbound_words():
    erae = ERAEConfig(entity_positions=(7,), subjects=(SubjectWords(1, (2,)),))
    assert erae.bias_terms(3) == (((2,), (1,)), ((7,), (0, 2)))
    assert ERAEConfig(entity_positions=(7,)).bias_terms(2) == (((7,), (0, 1)),)
    with pytest.raises(ValueError, match=r"bound to reference image\(s\) \[3\] but the reference has only 2"):
        ERAEConfig(subjects=(SubjectWords(2, (1,)),)).bias_terms(2)


def test_lse_merge_runs_the_native_head_dim_on_the_many_keys():
    """The non-reference part runs at head dim D over text + video keys; only the small part is wider."""
    calls = []
    kernel = torch_kernel_calling(lambda query, key: calls.append((query.shape[-1], key.shape[2])))
    query, key, value = qkv(1)
    step = make_step([True], weights=WEIGHTS)
    reference_self_attention(query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=kernel)
    assert calls == [(HEAD_DIM, LAYOUT.text + LAYOUT.video), (24, LAYOUT.reference)]


def test_torch_on_cpu_runs_the_reference_part_at_the_native_head_dim_with_a_bias_mask():
    """PyTorch's CPU kernel takes the bias as an additive "b 1 Lq kept" mask: no extra head dims at all."""
    calls = []
    assert LSE_KERNELS["torch"].takes_bias(torch.zeros(1))
    kernel = recording_kernel(calls)
    query, key, value = qkv(2)
    step = make_step([True, True], weights=WEIGHTS)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=kernel
    )
    context = LAYOUT.text + LAYOUT.video
    assert calls == [
        ("plain", HEAD_DIM, context),
        ("biased", HEAD_DIM, LAYOUT.reference, (2, 1, LAYOUT.total, LAYOUT.reference), torch.float32),
    ]
    expected = oracle(
        query, key, value, tab=1.5, weights=WEIGHTS.tolist(), sees=[True, True], kept=[True] * 8,
        term_frames=[[0, 1]], activation=None, gamma=0.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("key_block, main", [(4, 12), (8, 13), (None, 13)])
def test_a_blocked_kernel_runs_whole_blocks_and_the_short_rest_joins_the_biased_part(key_block, main):
    """13 text + video keys, blocks of 4: the kernel gets 12, the 13th key joins the 8 reference keys with a
    zero bias. Blocks of 8 leave a rest of 5 (over a quarter block): nothing moves. Exact either way."""
    calls = []

    def biased(query, key, bias):
        calls.append(("biased", key.shape[2]))
        assert bool((bias[..., : key.shape[2] - LAYOUT.reference] == 0).all())

    kernel = torch_kernel_calling(
        lambda query, key: calls.append(("plain", key.shape[2])), biased, key_block=key_block
    )
    query, key, value = qkv(1, seed=4)
    step = make_step([True], weights=WEIGHTS)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=kernel
    )
    context = LAYOUT.text + LAYOUT.video
    assert calls == [("plain", main), ("biased", context - main + LAYOUT.reference)]
    expected = oracle(
        query, key, value, tab=1.5, weights=WEIGHTS.tolist(), sees=[True], kept=[True] * 8,
        term_frames=[[0, 1]], activation=None, gamma=0.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize(
    "keys, block, expected",
    [
        (1056, 512, 1024),
        (1024, 512, 1024),
        (1152, 512, 1024),
        (1153, 512, 1153),
        (400, 512, 400),
        (1056, None, 1056),
    ],
)
def test_whole_block_keys(keys, block, expected):
    """Rounded down to whole blocks when the rest is at most a quarter block and a whole block remains."""
    assert whole_block_keys(keys, block) == expected


def test_pytorchs_cpu_kernel_is_blocked_on_the_cpu_only():
    kernel = LSE_KERNELS["torch"]
    assert kernel.block_on(torch.zeros(1)) == 512
    assert kernel.block_on(torch.zeros(1, device="meta")) is None


def test_a_bias_mask_larger_than_the_query_falls_back_to_extra_head_dims():
    """40 reference keys > H·D = 32 channels per query: the mask would outgrow the query, so it is not built."""
    calls = []

    def refuse(*args):
        raise AssertionError("the bias mask must not be built")

    kernel = torch_kernel_calling(lambda query, key: calls.append((query.shape[-1], key.shape[2])), refuse)
    layout = TokenLayout.cogvideox(text=3, frames=1, reference_frames=1, frame_tokens=40)
    generator = torch.Generator().manual_seed(8)
    query, key, value = (
        torch.randn(1, layout.total, HEADS * HEAD_DIM, generator=generator) for _ in range(3)
    )
    step = plan_step(
        layout, tab=TABSchedule(shape="constant", peak=2.0), progress=0.5, row_sees_reference=[True],
        row_has_entities=[True], reference_weights=torch.rand(40, generator=generator), erae=None,
    )  # fmt: skip
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=kernel
    )
    assert calls == [(HEAD_DIM, layout.text + layout.video), (24, layout.reference)]
    masked = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=LSE_KERNELS["torch"]
    )
    torch.testing.assert_close(got, masked, atol=2e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_torch_cpu_kernel_with_a_bias_matches_a_float64_softmax(dtype):
    """The float32 bias is added to the scaled logits of every head; out and lse match float64."""
    generator = torch.Generator().manual_seed(9)
    query = torch.randn(2, 3, 37, 16, generator=generator).to(dtype)
    key, value = (torch.randn(2, 3, 11, 16, generator=generator).to(dtype) for _ in range(2))
    bias = (torch.rand(2, 1, 37, 11, generator=generator) * 4.0).to(torch.promote_types(dtype, torch.float32))
    out, lse = LSE_KERNELS["torch"].run_biased(query, key, value, 0.3, bias)
    logits = query.double() @ key.double().transpose(-1, -2) * 0.3 + bias.double()
    tolerance = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    torch.testing.assert_close(lse.double(), torch.logsumexp(logits, -1), atol=tolerance, rtol=0)
    expected = torch.softmax(logits, -1) @ value.double()
    torch.testing.assert_close(out.double(), expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("path", list(KERNELS))
def test_bfloat16_rows_stay_close_to_the_float64_oracle(path):
    """bf16 tokens on every path: within bf16's rounding of the float64 result on the same inputs."""
    query, key, value = (t.to(torch.bfloat16) for t in qkv(2, seed=10))
    step = make_step([True, False], weights=WEIGHTS, tab=3.0)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, lse_kernel=KERNELS[path]
    )
    assert got.dtype == torch.bfloat16
    expected = oracle(
        query, key, value, tab=3.0, weights=WEIGHTS.tolist(), sees=[True, False], kept=[True] * 8,
        term_frames=[[0, 1]], activation=None, gamma=0.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=6e-2, rtol=0)


def test_rows_without_reference_pay_only_for_text_and_video():
    calls = []

    def backend(query, key, value):
        calls.append((query.shape[2], key.shape[2], query.shape[-1]))
        return sdpa_attention(query, key, value)

    query, key, value = qkv(2)
    step = make_step([False, False], weights=WEIGHTS)
    reference_self_attention(query, key, value, HEADS, step, attention_fn=backend)
    context = LAYOUT.text + LAYOUT.video
    assert calls == [(context, context, HEAD_DIM)]


def test_tab_zero_runs_one_plain_call_over_all_keys():
    calls = []

    def backend(query, key, value):
        calls.append((key.shape[2], query.shape[-1]))
        return sdpa_attention(query, key, value)

    query, key, value = qkv(1)
    step = make_step([True], weights=WEIGHTS, tab=0.0)
    assert biased_rows_path(step.plan, LSE_KERNELS["torch"]) is None
    reference_self_attention(
        query, key, value, HEADS, step, attention_fn=backend, lse_kernel=LSE_KERNELS["torch"]
    )
    assert calls == [(LAYOUT.total, HEAD_DIM)]


def test_no_host_read_back_per_attention_call(monkeypatch):
    """Everything the call needs to decide is on the step: no .item(), bool(), float() or .tolist()."""
    query, key, value = qkv(3)
    erae = ERAEConfig(entity_positions=(1,), gamma=1.0, block_outside_mask=True)
    step = make_step([True, False, True], weights=WEIGHTS, erae=erae)
    assert step.plan is step.plan  # planned once per model call, before its attention calls
    activation = torch.rand(3, LAYOUT.video, 1)

    def refuse(*args, **kwargs):
        raise AssertionError("host read-back inside an attention call")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for kernel in KERNELS.values():
        reference_self_attention(
            query,
            key,
            value,
            HEADS,
            step,
            attention_fn=sdpa_attention,
            activation=activation,
            lse_kernel=kernel,
        )


def test_simulated_int8_kernel_keeps_the_bias_exact():
    """q and k quantized per block to int8 (as sage does): the biased output is as close to the float64
    oracle as the unbiased one is to its own, because the bias factors are of the size of b(s)."""
    generator = torch.Generator().manual_seed(5)
    layout_heads, head_dim = 2, 64
    layout = TokenLayout.cogvideox(text=8, frames=4, reference_frames=1, frame_tokens=32)
    shape = (2, layout.total, layout_heads * head_dim)
    query, key, value = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(3))
    weights = torch.rand(layout.reference, generator=generator, dtype=torch.float64)
    # The kernel on its own over all keys, no bias: the error int8 q/k costs any attention.
    split = [t.reshape(2, layout.total, layout_heads, head_dim).transpose(1, 2) for t in (query, key, value)]
    plain, _ = simulated_int8(*split, 1.0 / math.sqrt(head_dim))
    plain = plain.transpose(1, 2).reshape(shape)
    unbiased_error = float(
        (plain[0] - _dense(query, key, value, layout, layout_heads, 0.0, weights)[0]).abs().max()
    )
    step = plan_step(
        layout, tab=TABSchedule(shape="constant", peak=3.0), progress=0.5, row_sees_reference=[True, False],
        row_has_entities=[True, False], reference_weights=weights, erae=None,
    )  # fmt: skip
    exact = _dense(query, key, value, layout, layout_heads, 3.0, weights)
    got = reference_self_attention(
        query, key, value, layout_heads, step, attention_fn=sdpa_attention, lse_kernel=SIMULATED_INT8
    )
    biased_error = float((got[0] - exact[0]).abs().max())
    no_quant = reference_self_attention(
        query, key, value, layout_heads, step, attention_fn=sdpa_attention, lse_kernel=LSE_KERNELS["torch"]
    )
    assert float((no_quant[0] - exact[0]).abs().max()) < 1e-6  # weights are stored in float32
    assert unbiased_error > 1e-4, "the simulated quantization must make a visible error"
    assert biased_error < 1.5 * unbiased_error, (biased_error, unbiased_error)


def _dense(query, key, value, layout, heads, tab, weights):
    """Row 0 sees the reference with bias tab * m_j on video queries (float64, dense)."""
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (query, key, value))
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    bias = torch.zeros(layout.total, layout.total, dtype=torch.float64)
    bias[layout.video_slice, layout.reference_slice] = tab * weights
    out = torch.softmax(logits + bias, dim=-1) @ v
    return out.transpose(1, 2).reshape(query.shape)


def test_merge_of_two_halves_is_attention_over_all_keys():
    generator = torch.Generator().manual_seed(6)
    query, key, value = (torch.randn(1, 2, 9, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    full = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(8), -1) @ value

    def part(keys):
        logits = query @ key[:, :, keys].transpose(-1, -2) / math.sqrt(8)
        return torch.softmax(logits, -1) @ value[:, :, keys], torch.logsumexp(logits, -1)

    merged = merge_partial_attention(*part(slice(0, 6)), *part(slice(6, 9)))
    torch.testing.assert_close(merged, full)


def test_a_self_attention_of_another_length_is_refused():
    query = torch.zeros(1, LAYOUT.total + 4, HEADS * HEAD_DIM)
    with pytest.raises(
        ValueError, match=rf"has {LAYOUT.total + 4} queries .* planned layout has {LAYOUT.total}"
    ):
        check_sequence(query, query, LAYOUT)
    step = make_step([True], weights=WEIGHTS)
    with pytest.raises(ValueError, match="planned layout has"):
        reference_self_attention(query, query, query, HEADS, step, attention_fn=sdpa_attention)


def test_step_validation_is_clear():
    with pytest.raises(ValueError, match="one flag per batch row"):
        plan_step(
            LAYOUT, tab=TABSchedule(), progress=0.0, row_sees_reference=[True], row_has_entities=[True, False],
            reference_weights=WEIGHTS, erae=None,
        )  # fmt: skip
    with pytest.raises(ValueError, match="kept_reference must be"):
        ReferenceStep(
            layout=LAYOUT, tab_per_row=torch.ones(1), reference_weights=WEIGHTS[None],
            row_sees_reference=torch.ones(1, dtype=torch.bool), kept_reference=torch.ones(3, dtype=torch.bool),
            erae=None, erae_rows=torch.ones(1, dtype=torch.bool),
        )  # fmt: skip


PREFIX = TokenLayout(text=0, video=3 * 4, reference=2 * 4, frame_tokens=4, reference_first=True)
"""VACE's layout: two reference frames in front of three video frames, no text in the self-attention."""


@pytest.mark.parametrize("path", list(KERNELS))
@pytest.mark.parametrize("sees", [[True, True], [True, False]])
def test_a_reference_in_front_of_the_video_gets_the_same_bias(path, sees):
    generator = torch.Generator().manual_seed(5)
    query, key, value = (
        torch.randn(2, PREFIX.total, HEADS * HEAD_DIM, generator=generator) for _ in range(3)
    )
    erae = ERAEConfig(entity_positions=(2,), gamma=1.5, block_outside_mask=True)
    step = plan_step(
        PREFIX,
        tab=TABSchedule(shape="constant", peak=2.0),
        progress=0.3,
        row_sees_reference=sees,
        row_has_entities=sees,
        reference_weights=WEIGHTS,
        erae=erae,
    )
    activation = (
        torch.rand(2, PREFIX.video, 1, generator=generator)
        * torch.tensor(sees, dtype=torch.float32)[:, None, None]
    )
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, activation=activation,
        lse_kernel=KERNELS[path],
    )  # fmt: skip
    expected = oracle(
        query, key, value, tab=2.0, weights=WEIGHTS.tolist(), sees=sees,
        kept=[w > 0 for w in WEIGHTS.tolist()], term_frames=[[0, 1]], activation=activation.tolist(),
        gamma=1.5, layout=PREFIX,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)


def test_a_reference_prefix_at_tab_zero_is_one_plain_call_over_the_sequence_as_it_stands():
    """Bit for bit the host's own attention: no reordering of the keys."""
    generator = torch.Generator().manual_seed(6)
    query, key, value = (
        torch.randn(2, PREFIX.total, HEADS * HEAD_DIM, generator=generator) for _ in range(3)
    )
    step = plan_step(
        PREFIX,
        tab=TABSchedule(shape="constant", peak=0.0),
        progress=0.5,
        row_sees_reference=[True, True],
        row_has_entities=[True, False],
        reference_weights=torch.ones(PREFIX.reference),
        erae=None,
    )
    got = reference_self_attention(query, key, value, HEADS, step, attention_fn=sdpa_attention)
    split = [t.reshape(2, PREFIX.total, HEADS, HEAD_DIM).transpose(1, 2) for t in (query, key, value)]
    plain = sdpa_attention(*split).transpose(1, 2).reshape(2, PREFIX.total, HEADS * HEAD_DIM)
    assert torch.equal(got, plain)


def test_a_reference_prefix_holds_no_text():
    with pytest.raises(ValueError, match="reference first holds no text"):
        TokenLayout(text=3, video=4, reference=4, frame_tokens=4, reference_first=True)
    assert (PREFIX.reference_slice, PREFIX.video_slice, PREFIX.context_slice) == (
        slice(0, 8),
        slice(8, 20),
        slice(8, 20),
    )


def test_the_plan_keeps_no_float64_on_a_device_without_it():
    """Apple's MPS has no float64: the per-row TAB values of a plan go there as float32."""
    from customvideox_core.reference_sources import plan_dtype

    assert plan_dtype("mps") == torch.float32
    assert plan_dtype(torch.device("cpu")) == plan_dtype("cuda:0") == torch.float64
    assert make_step([True], weights=WEIGHTS).plan.term_tab.dtype == torch.float64
