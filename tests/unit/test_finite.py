"""NaN and infinity refused: float inputs (with the input's name and range) and weight files."""

import math

import pytest
import torch

from customvideox_core.finite import NonFiniteError, check_finite_number, check_finite_weights


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_with_name_and_range(value) -> None:
    with pytest.raises(NonFiniteError) as caught:
        check_finite_number(value, "cfg", owner="CustomVideoX Sample", low=0.0, high=100.0)
    assert str(caught.value).startswith(f"CustomVideoX Sample: cfg is {value!r}; it must be a finite number")
    assert "between 0 and 100" in str(caught.value)


@pytest.mark.parametrize("value", [0.0, -4.0, 1e30, 3, True, "text", None])
def test_finite_and_other_values_pass(value) -> None:
    check_finite_number(value, "x", owner="node")  # not this check's business: other values pass


def test_weights_with_nan_or_inf_are_refused_naming_them() -> None:
    tensors = {name: torch.ones(2, 2) for name in ("a", "b", "c", "d")}
    tensors["ids"] = torch.arange(3)
    check_finite_weights(tensors, source="f.safetensors")
    tensors["c"][1, 0] = math.nan
    tensors["a"][0, 1] = -math.inf
    with pytest.raises(NonFiniteError) as caught:
        check_finite_weights(tensors, source="f.safetensors")
    assert str(caught.value).startswith(
        "f.safetensors: 2 of 5 tensors hold NaN or infinite values (first: a, c)"
    )
