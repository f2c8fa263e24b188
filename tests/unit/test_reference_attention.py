"""reference_self_attention / plan_step against the dense float64 oracle of ``test_reference_paths`` (written
from docs/ARCHITECTURE.md, "The bias") and a float64 entity activation."""

import math

import pytest
import torch
from test_reference_paths import oracle

from customvideox_core.attention import sdpa_attention
from customvideox_core.erae import ERAEConfig
from customvideox_core.layout import TokenLayout
from customvideox_core.reference_attention import (
    joint_entity_activation,
    plan_step,
    reference_self_attention,
)
from customvideox_core.tab import TABSchedule

HEADS, HEAD_DIM = 2, 16
LAYOUT = TokenLayout.cogvideox(text=5, frames=2, reference_frames=1, frame_tokens=4)


def naive_activation(query, key, heads, layout, positions):
    """a_i: entity mass of the softmax over text keys, mean over heads, min-max per frame (float64)."""
    batch = query.shape[0]
    q = query.double().reshape(batch, -1, heads, HEAD_DIM)
    k = key.double().reshape(batch, -1, heads, HEAD_DIM)
    out = torch.zeros(batch, layout.video, dtype=torch.float64)
    for b in range(batch):
        for i in range(layout.video):
            total = 0.0
            for h in range(heads):
                logits = [
                    float(q[b, layout.text + i, h] @ k[b, t, h]) / math.sqrt(HEAD_DIM)
                    for t in range(layout.text)
                ]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                total += sum(weights[p] for p in positions) / sum(weights)
            out[b, i] = total / heads
        for f in range(layout.video_frames):
            frame = out[b, f * layout.frame_tokens : (f + 1) * layout.frame_tokens]
            low, high = frame.min(), frame.max()
            frame.copy_((frame - low) / (high - low) if high - low > 1e-12 else torch.zeros_like(frame))
    return out


def _qkv(batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, LAYOUT.total, HEADS * HEAD_DIM, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("uncond_sees_reference", [False, True])
def test_cond_and_uncond_rows_match_oracle(uncond_sees_reference):
    query, key, value = _qkv(batch=2)
    weights = torch.tensor([1.0, 0.5, 0.0, 0.25])
    schedule = TABSchedule(shape="constant", peak=1.5)
    step = plan_step(
        LAYOUT,
        tab=schedule,
        progress=0.3,
        row_sees_reference=[True, uncond_sees_reference],
        row_has_entities=[True, False],
        reference_weights=weights,
        erae=None,
    )
    got = reference_self_attention(query, key, value, HEADS, step, attention_fn=sdpa_attention)
    expected = oracle(
        query,
        key,
        value,
        layout=LAYOUT,
        tab=1.5,
        weights=weights,
        gamma=0.0,
        activation=None,
        sees=[True, uncond_sees_reference],
        kept=[True] * 4,
        term_frames=[[0]],
    )
    assert torch.allclose(got.double(), expected, atol=2e-4)


def test_erae_and_block_outside_mask_match_oracle():
    query, key, value = _qkv(batch=1, seed=3)
    weights = torch.tensor([1.0, 0.0, 0.6, 0.0])
    erae = ERAEConfig(entity_positions=(1, 3), gamma=2.0, threshold=0.0, block_outside_mask=True)
    schedule = TABSchedule(shape="parabolic", peak=2.0, floor=0.0)
    step = plan_step(
        LAYOUT,
        tab=schedule,
        progress=0.5,
        row_sees_reference=[True],
        row_has_entities=[True],
        reference_weights=weights,
        erae=erae,
    )
    activation = joint_entity_activation(query, key, HEADS, step)
    expected_activation = naive_activation(query, key, HEADS, LAYOUT, [1, 3])
    assert torch.allclose(activation[..., 0].double(), expected_activation, atol=1e-5)
    got = reference_self_attention(
        query, key, value, HEADS, step, attention_fn=sdpa_attention, activation=activation
    )
    expected = oracle(
        query,
        key,
        value,
        layout=LAYOUT,
        tab=2.0,
        weights=weights,
        gamma=2.0,
        activation=expected_activation[..., None],  # [B, video, 1 term]
        sees=[True],
        kept=[w != 0.0 for w in weights.tolist()],
        term_frames=[[0]],
    )
    assert torch.allclose(got.double(), expected, atol=2e-4)


def test_uncond_rows_get_no_entity_activation():
    query, key, _ = _qkv(batch=2, seed=5)
    erae = ERAEConfig(entity_positions=(0,), gamma=1.0)
    step = plan_step(
        LAYOUT,
        tab=TABSchedule(),
        progress=0.5,
        row_sees_reference=[True, True],
        row_has_entities=[False, True],
        reference_weights=torch.ones(4),
        erae=erae,
    )
    activation = joint_entity_activation(query, key, HEADS, step)
    assert torch.count_nonzero(activation[0]) == 0
    assert activation[1].max() == pytest.approx(1.0)
    assert activation.shape == (2, LAYOUT.video, 1)


def test_blocked_reference_equals_attention_without_reference_tokens():
    """Every reference key blocked: text and video rows equal plain attention over [text | video] only."""
    query, key, value = _qkv(batch=1, seed=7)
    step = plan_step(
        LAYOUT,
        tab=TABSchedule(shape="constant", peak=5.0),
        progress=0.5,
        row_sees_reference=[False],
        row_has_entities=[False],
        reference_weights=torch.ones(4),
        erae=None,
    )
    got = reference_self_attention(query, key, value, HEADS, step, attention_fn=sdpa_attention)
    keep = LAYOUT.text + LAYOUT.video
    split = [t[:, :keep].reshape(1, keep, HEADS, HEAD_DIM).transpose(1, 2) for t in (query, key, value)]
    plain = sdpa_attention(*split).transpose(1, 2).reshape(1, keep, HEADS * HEAD_DIM)
    assert torch.allclose(got[:, :keep], plain, atol=1e-5)


def test_reference_weights_of_another_size_are_refused():
    with pytest.raises(ValueError, match="reference weights cover 3 tokens"):
        plan_step(
            LAYOUT,
            tab=TABSchedule(),
            progress=0.0,
            row_sees_reference=[True],
            row_has_entities=[True],
            reference_weights=torch.ones(3),
            erae=None,
        )


def test_a_row_that_sees_but_is_not_biased_attends_as_without_a_bias():
    """row_biased=False: that row sees the reference keys at their plain logits (TAB and ERAE off),
    while a biased row in the same call gets the bias."""
    query, key, value = _qkv(batch=2, seed=11)
    erae = ERAEConfig(entity_positions=(0,), gamma=1.0)
    kwargs = dict(
        tab=TABSchedule(shape="constant", peak=3.0),
        progress=0.5,
        row_sees_reference=[True, True],
        row_has_entities=[True, True],
        reference_weights=torch.ones(4),
        erae=erae,
    )
    step = plan_step(LAYOUT, row_biased=[False, True], **kwargs)
    assert step.tab_per_row.tolist() == [0.0, 3.0]
    got = reference_self_attention(query, key, value, HEADS, step, attention_fn=sdpa_attention)
    split = [t.reshape(2, LAYOUT.total, HEADS, HEAD_DIM).transpose(1, 2) for t in (query, key, value)]
    plain = sdpa_attention(*split).transpose(1, 2).reshape(2, LAYOUT.total, HEADS * HEAD_DIM)
    assert torch.allclose(got[0], plain[0], atol=1e-5)
    assert not torch.allclose(got[1, LAYOUT.video_slice], plain[1, LAYOUT.video_slice], atol=1e-3)
    with pytest.raises(ValueError, match="row_biased has 1 flags for 2 rows"):
        plan_step(LAYOUT, row_biased=[True], **kwargs)


def test_row_biased_as_a_tensor_switches_the_bias_on_the_device():
    """row_biased as a bool tensor (Phantom's zero-frame switch, decided on the frames' device): the same
    attention as the host flags give, with nothing read back while planning — a fake tensor (no data)
    is accepted as the switch."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    query, key, value = _qkv(batch=2, seed=11)
    kwargs = dict(
        tab=TABSchedule(shape="constant", peak=3.0),
        progress=0.5,
        row_sees_reference=[True, True],
        row_has_entities=[True, True],
        reference_weights=torch.ones(4),
        erae=ERAEConfig(entity_positions=(0,), gamma=1.0),
    )
    host = plan_step(LAYOUT, row_biased=[False, True], **kwargs)
    device = plan_step(LAYOUT, row_biased=torch.tensor([False, True]), **kwargs)
    assert device.tab_per_row.tolist() == [0.0, 3.0]
    got = reference_self_attention(query, key, value, HEADS, device, attention_fn=sdpa_attention)
    expected = reference_self_attention(query, key, value, HEADS, host, attention_fn=sdpa_attention)
    assert torch.allclose(got, expected, atol=1e-5)
    switch = FakeTensorMode(allow_non_fake_inputs=True).from_tensor(torch.tensor([False, True]))
    fake_step = plan_step(LAYOUT, row_biased=switch, **kwargs)
    assert fake_step.plan.biased and fake_step.plan.seeing.rows == (0, 1)
    with pytest.raises(ValueError, match=r"row_biased must be a \[2\] bool tensor"):
        plan_step(LAYOUT, row_biased=torch.tensor([1.0, 0.0]), **kwargs)
