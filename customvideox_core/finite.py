"""Non-finite numbers refused where they enter: float inputs of the nodes and tensors of weight files.

A NaN passes every range check (``NaN < low`` and ``NaN > high`` are both false), so a NaN strength,
cfg or denoise sent over the API, or a NaN weight in an adapter file, would otherwise run to an all-NaN
video or a confusing error far away ("cannot convert float NaN to integer", "training loss became nan").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


class NonFiniteError(ValueError):
    """A number or a weight that is NaN or infinite."""


def check_finite_number(
    value: object, name: str, *, owner: str, low: float | None = None, high: float | None = None
) -> None:
    """Raise :class:`NonFiniteError` if ``value`` is a NaN or infinite float, naming ``owner``'s input
    ``name`` and the range it takes (``low`` … ``high`` when given). Other values pass untouched (the
    caller's own checks see them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isfinite(value):
        return
    span = "" if low is None or high is None else f" between {low:g} and {high:g}"
    raise NonFiniteError(
        f"{owner}: {name} is {value!r}; it must be a finite number{span} (NaN and infinity are refused). "
        f"Set {name} to a number."
    )


def check_finite_weights(tensors: Mapping[str, Tensor], *, source: str) -> None:
    """Raise :class:`NonFiniteError` if any floating tensor of a weight file holds NaN or infinity,
    naming up to three of them (``source``: the file's name)."""
    bad = sorted(
        key
        for key, tensor in tensors.items()
        if isinstance(tensor, Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    )
    if bad:
        raise NonFiniteError(
            f"{source}: {len(bad)} of {len(tensors)} tensors hold NaN or infinite values (first: "
            f"{', '.join(bad[:3])}); the file is damaged (a training run that diverged, or an overflow when it "
            "was saved in half precision). Nothing was loaded; use another file or train it again."
        )
