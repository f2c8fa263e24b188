"""Time-aware attention bias (TAB): the schedule ``b(s)`` over the model's time ``s``.

``s`` is percent of the model's own timestep range, ComfyUI's ``start_percent`` / ``end_percent`` scale
(:mod:`.clock`): 0 = pure noise, 1 = clean. The same schedule works for DDPM-sigma models (CogVideoX) and
flow models (Wan), for any number of steps, and across samplers that each run part of one schedule. A model
call applies :meth:`TABSchedule.mean_over` the stretch of time its step covers, so few steps get the amount
the curve intends.

Shapes (``s`` is global progress; the window ``[start, end]`` only switches the bias on and off):

- ``parabolic``: ``b(s) = floor + (peak - floor) * 4 s (1 - s)`` for ``s`` in ``[start, end]``, 0 outside.
  Low at the start and the end, ``peak`` at ``s = 0.5`` (the paper's inverted-parabola mask).
- ``constant``: ``peak`` inside the window (the paper's fixed-bias baseline), 0 outside.
- ``linear``: from ``peak`` at ``s = start`` to ``floor`` at ``s = end`` (a decaying reference), 0 outside.
- ``custom``: ``values`` spread evenly over ``[start, end]`` (``values[0]`` at ``start``, ``values[-1]`` at
  ``end``), linearly interpolated; one value is a constant; 0 outside.

Negative values are allowed: they weaken the reference instead of strengthening it. Every value (``peak``,
``floor``, each custom value) lies within ``±TAB_VALUE_LIMIT``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .clock import ClockSpan
from .number_lists import parse_numbers
from .ranges import TAB_LEVEL

TABShape = Literal["parabolic", "constant", "linear", "custom"]
TAB_SHAPES: tuple[str, ...] = get_args(TABShape)
"""The one list of TAB shapes: the TimeAwareBias node's choices and the batch client's ``tab_shape``."""
TAB_VALUE_LIMIT = TAB_LEVEL.high
"""The one range of every TAB value (``peak``, ``floor``, ``custom`` values): ``[-20, 20]`` added to an
attention logit already saturates the softmax."""


def _check_limit(label: str, value: float) -> float:
    if abs(value) > TAB_VALUE_LIMIT:
        raise ValueError(
            f"TAB {label} must lie in [{-TAB_VALUE_LIMIT:g}, {TAB_VALUE_LIMIT:g}], got {value!r}. "
            f"A bias of ±{TAB_VALUE_LIMIT:g} on the attention logit already saturates the softmax."
        )
    return value


def check_tab_shape(shape: object, name: str = "TAB shape") -> None:
    """Raise ``ValueError`` unless ``shape`` is one of :data:`TAB_SHAPES` (``name``: what the user calls it)."""
    if shape not in TAB_SHAPES:
        raise ValueError(
            f"Unknown {name} {shape!r}; expected one of {', '.join(TAB_SHAPES)}. Pick one of these shapes."
        )


def check_tab_number(name: str, value: object) -> float:
    """``value`` as a float; ``TypeError``/``ValueError`` unless it is a finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"TAB {name} must be a number, got {type(value).__name__} ({value!r}).")
    if not math.isfinite(value):
        raise ValueError(f"TAB {name} must be a finite number, got {value!r}. Use a finite value.")
    return float(value)


def check_tab_value(name: str, value: object) -> float:
    """A bias value (``peak``, ``floor``) as a float: finite and within ``±TAB_VALUE_LIMIT``."""
    return _check_limit(name, check_tab_number(name, value))


def check_tab_window(
    start: float | None,
    end: float | None,
    names: tuple[str, str] = ("start", "end"),
    what: str = "TAB window",
) -> None:
    """Raise ``ValueError`` unless each given bound lies in ``[0, 1]`` and ``start <= end``.

    ``None`` is "not given" (the batch client's overrides); ``names`` are what the user calls the bounds,
    ``what`` the window (the Reference Guider's image window shares the rule).
    """
    for name, value in zip(names, (start, end), strict=True):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{what} {name} must lie in [0, 1] (percent of the model's time, as ComfyUI's "
                f"start_percent/end_percent: 0 = pure noise, 1 = clean), got {value!r}."
            )
    if start is not None and end is not None and start > end:
        raise ValueError(
            f"{what} is inverted: {names[0]} ({start!r}) must not exceed {names[1]} ({end!r}). "
            f"Set {names[0]} <= {names[1]} (it is active for {names[0]} <= s <= {names[1]})."
        )


def check_tab_values(values: Sequence[object]) -> tuple[float, ...]:
    """Custom schedule values as floats; ``TypeError``/``ValueError`` naming the first bad index."""
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"TAB custom value at index {index} must be a number, got {type(value).__name__} ({value!r})."
            )
        if not math.isfinite(value):
            raise ValueError(
                f"TAB custom value at index {index} must be finite, got {value!r}. "
                "Replace it with a finite number."
            )
        _check_limit(f"custom value at index {index}", float(value))
    return tuple(float(value) for value in values)


def parse_custom_values(text: str, label: str = "custom_values") -> tuple[float, ...]:
    """``"0, 0.5, 1"`` → ``(0.0, 0.5, 1.0)`` (:func:`~.number_lists.parse_numbers`). Finiteness is
    :class:`TABSchedule`'s check."""
    return parse_numbers(text, label, "numbers separated by commas, e.g. 0, 0.5, 1, 0.5, 0")


@dataclass(frozen=True)
class TABSchedule:
    """A time-aware attention bias schedule ``b(s)``, ``s`` in ``[0, 1]`` (percent of the model's time:
    0 = pure noise, 1 = clean; see :mod:`.clock`).

    - parabolic: ``b(s) = floor + (peak - floor) * 4 s (1 - s)`` for ``s`` in ``[start, end]``, 0 outside
      (``s`` is global progress, not normalised to the window).
    - constant: ``peak`` for ``s`` in ``[start, end]``, 0 outside.
    - linear: ``peak`` at ``s = start`` falling (or rising) linearly to ``floor`` at ``s = end``, 0 outside;
      a zero-width window gives ``peak``.
    - custom: ``values`` spread evenly over ``[start, end]`` (``values[0]`` at ``start``, ``values[-1]``
      at ``end``), linearly interpolated between neighbours; a single value is a constant; 0 outside;
      a zero-width window gives ``values[0]``.

    The window is closed: ``s == start`` and ``s == end`` are inside.
    """

    shape: TABShape = "parabolic"
    peak: float = 1.0
    floor: float = 0.0
    start: float = 0.0
    end: float = 1.0
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_tab_shape(self.shape)
        for name in ("peak", "floor"):
            object.__setattr__(self, name, check_tab_value(name, getattr(self, name)))
        for name in ("start", "end"):
            object.__setattr__(self, name, check_tab_number(name, getattr(self, name)))
        check_tab_window(self.start, self.end)
        values = check_tab_values(self.values)
        object.__setattr__(self, "values", values)
        if self.shape == "custom" and not values:
            raise ValueError(
                "TAB shape 'custom' needs at least one value in `values` (spread evenly over "
                "[start, end]); give e.g. values=(0.0, 1.0, 0.0)."
            )
        if self.shape != "custom" and values:
            raise ValueError(
                f"TAB `values` are only used by shape 'custom', but shape is {self.shape!r} and "
                f"{len(values)} value(s) were given. Use shape='custom' or drop the values."
            )

    def value_at(self, progress: float) -> float:
        """``b(s)`` at ``s = progress`` in ``[0, 1]`` (percent of the model's time)."""
        progress = float(progress)
        if not math.isfinite(progress) or not 0.0 <= progress <= 1.0:
            raise ValueError(
                f"Progress must be a finite number in [0, 1] (percent of the model's time), got {progress!r}. "
                "Compute it with clock.percent_of_sigma(sigma, model_sampling.percent_to_sigma)."
            )
        if not self.start <= progress <= self.end:
            return 0.0
        if self.shape == "parabolic":
            return self.floor + (self.peak - self.floor) * 4.0 * progress * (1.0 - progress)
        if self.shape == "constant":
            return self.peak
        width = self.end - self.start
        fraction = 0.0 if width == 0.0 else (progress - self.start) / width
        if self.shape == "linear":
            return self.peak + (self.floor - self.peak) * fraction
        return _interpolate_evenly(self.values, fraction)

    @property
    def is_zero(self) -> bool:
        """Whether ``b(s) = 0`` everywhere (every value of the shape is 0)."""
        if self.shape == "custom":
            return not any(self.values)
        if self.shape == "constant":
            return self.peak == 0.0
        return self.peak == 0.0 and self.floor == 0.0

    def mean_over(self, span: ClockSpan) -> float:
        """The mean of ``b(s)`` over ``span`` (``b`` at the point for a zero-length span): what one model
        call applies for the stretch of time its step covers.

        Exact: ``b`` is a polynomial of degree at most 2 between its breakpoints (the window's edges, the
        custom values' knots), and Simpson's rule is exact for those pieces. Outside the window ``b`` is 0, so
        a step that straddles an edge gets the window's share; a zero-width window has no time, so it acts
        only on a zero-length span.
        """
        if span.length == 0.0:
            return self.value_at(span.start)
        low, high = max(span.start, self.start), min(span.end, self.end)
        if high <= low:
            return 0.0
        knots = self._breakpoints()
        edges = [low, *(knot for knot in knots if low < knot < high), high]
        total = 0.0
        for left, right in zip(edges, edges[1:], strict=False):
            middle = 0.5 * (left + right)
            values = self.value_at(left) + 4.0 * self.value_at(middle) + self.value_at(right)
            total += (right - left) * values / 6.0
        return total / span.length

    def _breakpoints(self) -> tuple[float, ...]:
        """Where ``b`` may change its formula inside the window: the custom values' knots."""
        if self.shape != "custom" or len(self.values) < 3:
            return ()
        width = self.end - self.start
        count = len(self.values) - 1
        return tuple(self.start + width * index / count for index in range(1, count))

    def curve(self, progresses: Sequence[float]) -> list[float]:
        """``[b(s) for s in progresses]`` (for plots and previews)."""
        return [self.value_at(progress) for progress in progresses]


def _interpolate_evenly(values: tuple[float, ...], fraction: float) -> float:
    """Linear interpolation of ``values`` placed at ``0, 1/(n-1), ..., 1``, evaluated at ``fraction``."""
    if len(values) == 1:
        return values[0]
    position = fraction * (len(values) - 1)
    lower = min(int(math.floor(position)), len(values) - 2)
    weight = position - lower
    return values[lower] + (values[lower + 1] - values[lower]) * weight


def step_progresses(num_steps: int) -> list[float]:
    """``num_steps`` evenly spaced points of the clock, ``i / (num_steps - 1)`` (for plots); ``[0.0]`` for one."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if num_steps == 1:
        return [0.0]
    return [index / (num_steps - 1) for index in range(num_steps)]
