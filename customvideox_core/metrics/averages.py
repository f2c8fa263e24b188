"""The mean the measures report: exact (``math.fsum``), and ``None`` for nothing measured."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_or_none(values: Sequence[float] | None) -> float | None:
    """``fsum(values) / len(values)``, or ``None`` when ``values`` is empty or ``None``."""
    return math.fsum(values) / len(values) if values else None
