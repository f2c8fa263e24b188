"""Token layout and bias factors against a naive entry-by-entry bias (docs/ARCHITECTURE.md, "The bias")."""

import math

import pytest
import torch
from bias_oracles import bias_factors
from hypothesis import given, settings
from hypothesis import strategies as st

import customvideox_core.layout as layout_module
from customvideox_core.layout import TokenLayout


def naive_bias(
    layout: TokenLayout,
    tab: list[float],
    weights: list[list[float]],
    activation: list[list[float]] | list[list[list[float]]] | None,
    gamma: float,
    term_frames: list[list[int]] | None = None,
) -> torch.Tensor:
    """The bias of docs/ARCHITECTURE.md ("The bias") written entry by entry with Python floats: [B, L, L].

    ``activation[row][i]`` is a float (one term) or a list with one value per term of ``term_frames``.
    """
    text, video, total = layout.text, layout.video, layout.total
    reference_start = text + video
    bias = torch.zeros(len(tab), total, total, dtype=torch.float64)
    for row in range(len(tab)):
        for query in range(total):
            for key in range(total):
                value = 0.0
                if key >= reference_start and text <= query < reference_start:
                    j = key - reference_start
                    frame = j // layout.frame_tokens
                    groups = [list(range(layout.reference_frames))] if term_frames is None else term_frames
                    for k, group in enumerate(groups):
                        if frame not in group:
                            continue
                        a_i = 0.0 if activation is None else activation[row][query - text]
                        a_i = a_i[k] if isinstance(a_i, list) else a_i
                        value += tab[row] * (1.0 + gamma * a_i) * weights[row][j]
                bias[row, query, key] = value
    return bias


def product(factors: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    query_bias, key_bias = factors
    return query_bias @ key_bias.transpose(1, 2)


LAYOUT = TokenLayout(text=2, video=6, reference=4, frame_tokens=2)


def test_layout_geometry() -> None:
    layout = TokenLayout.cogvideox(text=226, frames=13, reference_frames=1, frame_tokens=1350)
    assert (layout.text, layout.video, layout.reference) == (226, 17550, 1350)
    assert layout.total == 226 + 17550 + 1350
    assert layout.text_slice == slice(0, 226)
    assert layout.video_slice == slice(226, 226 + 17550)
    assert layout.reference_slice == slice(226 + 17550, 226 + 17550 + 1350)
    assert (layout.video_frames, layout.reference_frames) == (13, 1)
    wan = TokenLayout.wan(frames=3, reference_frames=2, frame_tokens=4)
    assert (wan.text, wan.video, wan.reference, wan.total) == (0, 12, 8, 20)
    assert wan.text_slice == slice(0, 0)
    assert list(range(20))[wan.reference_slice] == list(range(12, 20))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": 0, "video": 5, "reference": 4, "frame_tokens": 2}, "video=5 is not a whole number"),
        ({"text": 0, "video": 4, "reference": 3, "frame_tokens": 2}, "reference=3 is not a whole number"),
        ({"text": -1, "video": 4, "reference": 2, "frame_tokens": 2}, "text must be a non-negative"),
        ({"text": 0, "video": 4, "reference": 2, "frame_tokens": 0}, "frame_tokens must be positive"),
    ],
)
def test_layout_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenLayout(**kwargs)


def test_no_blocking_logit_is_left() -> None:
    """Keys that must not be seen are dropped from the call; no large logit exists any more."""
    assert not hasattr(layout_module, "BLOCK_LOGIT")


def float64_factors(
    tab: list[float], weights: list[list[float]], activation: list | None = None, **options
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``bias_factors`` over ``LAYOUT`` in float64, from the same nested lists :func:`naive_bias` takes."""
    tensors = {"tab": torch.tensor(tab), "reference_weights": torch.tensor(weights)}
    if activation is not None:
        tensors["entity_activation"] = torch.tensor(activation)
    return bias_factors(LAYOUT, **tensors, dtype=torch.float64, **options)


def test_tab_only_matches_naive_and_has_rank_one() -> None:
    tab = [0.7, -1.5]
    weights = [[1.0, 0.5, 0.0, 0.25], [0.2, 0.4, 0.6, 0.8]]
    factors = float64_factors(tab, weights)
    assert factors is not None
    assert factors[0].shape == (2, LAYOUT.total, 1) and factors[1].shape == (2, LAYOUT.total, 1)
    torch.testing.assert_close(product(factors), naive_bias(LAYOUT, tab, weights, None, 0.0))


def test_erae_matches_naive() -> None:
    tab = [1.2, 0.4]
    weights = [[1.0, 0.5, 0.0, 0.25], [0.2, 0.4, 0.6, 0.8]]
    activation = [[0.0, 0.1, 0.5, 1.0, 0.3, 0.0], [1.0, 1.0, 0.0, 0.0, 0.5, 0.25]]
    factors = float64_factors(tab, weights, activation, gamma=0.8)
    torch.testing.assert_close(product(factors), naive_bias(LAYOUT, tab, weights, activation, 0.8))


def test_subject_terms_match_naive_and_have_rank_k() -> None:
    """Two subjects: frame 0 bound to term 0, frame 1 to term 1, each with its own activation."""
    tab = [1.0, 0.5]
    weights = [[1.0, 0.5, 0.25, 0.75]]
    activation = [[[0.5, 0.0], [1.0, 0.2]] * 3, [[0.0, 1.0], [0.25, 0.5]] * 3]
    factors = float64_factors(tab, weights, activation, gamma=2.0, term_frames=[[0], [1]])
    assert factors[0].shape[-1] == 2
    expected = naive_bias(LAYOUT, tab, weights * 2, activation, 2.0, [[0], [1]])
    torch.testing.assert_close(product(factors), expected)


@pytest.mark.parametrize(
    "case",
    ["zero_tab", "zero_weights", "erae_cancels", "no_reference_tokens"],
)
def test_identically_zero_bias_returns_none(case: str) -> None:
    layout, tab, weights = LAYOUT, torch.ones(2), torch.ones(2, 4)
    kwargs: dict = {}
    if case == "zero_tab":
        tab = torch.zeros(2)
    elif case == "zero_weights":
        weights = torch.zeros(1, 4)
    elif case == "erae_cancels":  # 1 + gamma * a = 0 everywhere
        kwargs.update(entity_activation=torch.ones(2, 6), gamma=-1.0)
    else:
        layout = TokenLayout(text=2, video=6, reference=0, frame_tokens=2)
        weights = torch.ones(2, 0)
    assert bias_factors(layout, tab=tab, reference_weights=weights, **kwargs) is None


def test_gamma_is_ignored_without_activation_and_activation_without_gamma() -> None:
    base = bias_factors(LAYOUT, tab=torch.ones(1), reference_weights=torch.ones(1, 4), dtype=torch.float64)
    with_gamma = bias_factors(
        LAYOUT, tab=torch.ones(1), reference_weights=torch.ones(1, 4), gamma=3.0, dtype=torch.float64
    )
    with_activation = bias_factors(
        LAYOUT,
        tab=torch.ones(1),
        reference_weights=torch.ones(1, 4),
        entity_activation=torch.ones(1, 6),
        dtype=torch.float64,
    )
    expected = naive_bias(LAYOUT, [1.0], [[1.0] * 4], None, 0.0)
    for factors in (base, with_gamma, with_activation):
        torch.testing.assert_close(product(factors), expected)


def test_output_dtype_and_device() -> None:
    factors = bias_factors(
        LAYOUT, tab=torch.ones(2), reference_weights=torch.ones(2, 4), dtype=torch.bfloat16, device="cpu"
    )
    assert factors[0].dtype == torch.bfloat16 and factors[1].dtype == torch.bfloat16
    assert factors[0].device.type == "cpu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reference_weights": torch.ones(2, 3)}, r"reference_weights has shape \(2, 3\), expected \(2, 4\)"),
        ({"reference_weights": torch.ones(3, 4)}, r"expected \(2, 4\) or \(1, 4\)"),
        ({"entity_activation": torch.ones(2, 5), "gamma": 1.0}, r"entity_activation .*expected \(2, 6, 1\)"),
        ({"tab": torch.ones(2, 1)}, r"tab has shape \(2, 1\), expected \(B,\)"),
        ({"term_frames": [[0], [2]]}, r"term_frames names reference frames \[2\]"),
        ({"gamma": math.nan}, "gamma .* must be a finite number"),
        ({"tab": torch.tensor([1.0, math.inf])}, "tab contains NaN or infinite"),
    ],
)
def test_bias_factor_validation(kwargs: dict, message: str) -> None:
    arguments = {"tab": torch.ones(2), "reference_weights": torch.ones(2, 4)} | kwargs
    with pytest.raises(ValueError, match=message):
        bias_factors(LAYOUT, **arguments)


@st.composite
def bias_cases(draw):
    frame_tokens = draw(st.integers(1, 3))
    layout = TokenLayout(
        text=draw(st.integers(0, 3)),
        video=frame_tokens * draw(st.integers(1, 3)),
        reference=frame_tokens * draw(st.integers(1, 2)),
        frame_tokens=frame_tokens,
    )
    batch = draw(st.integers(1, 3))
    unit = st.floats(0.0, 1.0)
    tab = draw(st.lists(st.floats(-3.0, 3.0), min_size=batch, max_size=batch))
    weights = [draw(st.lists(unit, min_size=layout.reference, max_size=layout.reference)) for _ in tab]
    activation = None
    if draw(st.booleans()):
        activation = [draw(st.lists(unit, min_size=layout.video, max_size=layout.video)) for _ in tab]
    gamma = draw(st.floats(-2.0, 2.0))
    return layout, tab, weights, activation, gamma


@settings(max_examples=60, deadline=None)
@given(bias_cases())
def test_factor_product_equals_naive_bias(case) -> None:
    layout, tab, weights, activation, gamma = case
    factors = bias_factors(
        layout,
        tab=torch.tensor(tab, dtype=torch.float64),
        reference_weights=torch.tensor(weights, dtype=torch.float64),
        entity_activation=None if activation is None else torch.tensor(activation, dtype=torch.float64),
        gamma=gamma,
        dtype=torch.float64,
    )
    expected = naive_bias(layout, tab, weights, activation, gamma)
    if factors is None:
        assert torch.count_nonzero(expected) == 0
    else:
        assert factors[0].shape == (len(tab), layout.total, 1)
        torch.testing.assert_close(product(factors), expected, rtol=1e-12, atol=1e-9)


def test_factors_drive_biased_attention_like_the_dense_bias() -> None:
    from bias_oracles import biased_attention

    generator = torch.Generator().manual_seed(0)
    query, key, value = (
        torch.randn(2, 3, LAYOUT.total, 8, generator=generator, dtype=torch.float64) for _ in "qkv"
    )
    tab, weights = [1.5, 0.8], [[1.0, 0.5, 0.0, 0.25]] * 2
    activation = [[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]] * 2
    factors = float64_factors(tab, weights, activation, gamma=1.0)
    output = biased_attention(query, key, value, *factors)
    logits = query @ key.transpose(-1, -2) / math.sqrt(8)
    dense = torch.softmax(logits + naive_bias(LAYOUT, tab, weights, activation, 1.0)[:, None], -1)
    torch.testing.assert_close(output, dense @ value)
