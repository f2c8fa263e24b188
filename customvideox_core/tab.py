"""Time-aware attention bias (TAB): the schedule ``b(s)`` over sampling progress ``s``.

``s`` runs from 0 (first sampling step) to 1 (last sampling step) and is read from the sampler's own
sigma schedule by :func:`sampling_progress`, so the same schedule works for DDPM-sigma models
(CogVideoX) and flow models (Wan) and for any number of steps.

Shapes (``s`` is global progress; the window ``[start, end]`` only switches the bias on and off):

- ``parabolic``: ``b(s) = floor + (peak - floor) * 4 s (1 - s)`` for ``s`` in ``[start, end]``, 0 outside.
  Low at the start and the end, ``peak`` at ``s = 0.5`` (the paper's inverted-parabola mask).
- ``constant``: ``peak`` inside the window (the paper's fixed-bias baseline), 0 outside.
- ``linear``: from ``peak`` at ``s = start`` to ``floor`` at ``s = end`` (a decaying reference), 0 outside.
- ``custom``: ``values`` spread evenly over ``[start, end]`` (``values[0]`` at ``start``, ``values[-1]`` at
  ``end``), linearly interpolated; one value is a constant; 0 outside.

Negative values are allowed: they weaken the reference instead of strengthening it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

TABShape = Literal["parabolic", "constant", "linear", "custom"]
TAB_SHAPES: tuple[str, ...] = get_args(TABShape)
"""The one list of TAB shapes: the TimeAwareBias node's choices and the batch client's ``tab_shape``."""


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


def check_tab_window(
    start: float | None, end: float | None, names: tuple[str, str] = ("start", "end")
) -> None:
    """Raise ``ValueError`` unless each given bound lies in ``[0, 1]`` and ``start <= end``.

    ``None`` is "not given" (the batch client's overrides); ``names`` are what the user calls the bounds.
    """
    for name, value in zip(names, (start, end), strict=True):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(
                f"TAB window {name} must lie in [0, 1] (sampling progress: 0 = first step, "
                f"1 = last step), got {value!r}."
            )
    if start is not None and end is not None and start > end:
        raise ValueError(
            f"TAB window is inverted: {names[0]} ({start!r}) must not exceed {names[1]} ({end!r}). "
            f"Set {names[0]} <= {names[1]} (the bias is active for start <= s <= end)."
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
    return tuple(float(value) for value in values)


def parse_custom_values(text: str, label: str = "custom_values") -> tuple[float, ...]:
    """``"0, 0.5, 1"`` → ``(0.0, 0.5, 1.0)``: commas, spaces or new lines separate values; empty items
    (a trailing comma, doubled separators) are skipped. Finiteness is :class:`TABSchedule`'s check."""
    values = []
    for index, item in enumerate(text.replace("\n", ",").replace(" ", ",").split(",")):
        if not item.strip():
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(
                f"{label} item {index + 1}: '{item.strip()}' is not a number; "
                "write numbers separated by commas, e.g. 0, 0.5, 1, 0.5, 0"
            ) from None
    return tuple(values)


@dataclass(frozen=True)
class TABSchedule:
    """A time-aware attention bias schedule ``b(s)``, ``s`` in ``[0, 1]`` (0 = first step, 1 = last step).

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
        for name in ("peak", "floor", "start", "end"):
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
        """``b(s)`` at sampling progress ``s = progress`` in ``[0, 1]``."""
        progress = float(progress)
        if not math.isfinite(progress) or not 0.0 <= progress <= 1.0:
            raise ValueError(
                f"Sampling progress must be a finite number in [0, 1], got {progress!r}. "
                "Compute it with sampling_progress(sigma, sample_sigmas)."
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
    """Progress ``s`` of each of ``num_steps`` sampling steps: ``i / (num_steps - 1)``; ``[0.0]`` for one step."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if num_steps == 1:
        return [0.0]
    return [index / (num_steps - 1) for index in range(num_steps)]


def _schedule_as_floats(sample_sigmas: Sequence[float] | Any) -> list[float]:
    """A sequence of numbers or a 1-D torch tensor → floats (duck-typed: this module never imports torch,
    so the batch client can share its checks and start instantly)."""
    if hasattr(sample_sigmas, "detach"):
        if sample_sigmas.ndim > 1:
            raise ValueError(
                f"sample_sigmas must be one-dimensional (the sampler's sigma schedule), got shape "
                f"{tuple(sample_sigmas.shape)}."
            )
        return [float(value) for value in sample_sigmas.detach().cpu().double().reshape(-1).tolist()]
    return [float(value) for value in sample_sigmas]


def sampling_progress(sigma: float, sample_sigmas: Sequence[float] | Any) -> float:
    """Sampling progress ``s`` in ``[0, 1]`` of the current ``sigma`` within the sampler's schedule.

    ``sample_sigmas`` is the sampler's descending sigma schedule (ComfyUI's ``sample_sigmas``), usually
    ending in 0; a trailing 0 is the end marker, not a step. With ``n`` steps left after removing it:

    - ``sigma == sample_sigmas[i]`` (step ``i``) gives ``s = i / (n - 1)``;
    - a sigma between two entries (samplers that evaluate mid-step, e.g. Heun, DPM2) interpolates linearly
      in sigma between the neighbouring indices;
    - a sigma at or above the first entry gives 0, at or below the last step's sigma gives 1;
    - a one-step schedule gives 0.

    Works for DDPM-sigma schedules (CogVideoX: sigmas from ~0.03 to 150 and more) and flow schedules
    (Wan: 1 to 0). Leading ``+inf`` entries (a zero-terminal-SNR first step) are accepted: a finite sigma
    between ``+inf`` and the next entry gets that next entry's progress (the limit of the interpolation).

    Raises ``ValueError`` on an empty schedule, NaN, negative or ``-inf`` entries, an ascending pair, or a
    NaN ``sigma``.
    """
    sigma = float(sigma)
    if math.isnan(sigma):
        raise ValueError("Current sigma is NaN; expected a number from the sampler's sigma schedule.")
    schedule = _schedule_as_floats(sample_sigmas)
    if not schedule:
        raise ValueError(
            "sample_sigmas is empty; expected the sampler's descending sigma schedule "
            "(transformer_options['sample_sigmas'])."
        )
    for index, value in enumerate(schedule):
        if math.isnan(value) or value < 0.0:
            raise ValueError(
                f"sample_sigmas[{index}] is {value!r}; sigmas must be non-negative numbers (NaN found or "
                "negative). Check the scheduler that produced the schedule."
            )
    for index in range(len(schedule) - 1):
        if schedule[index + 1] > schedule[index]:
            raise ValueError(
                f"sample_sigmas must be descending (non-increasing), but sample_sigmas[{index}]="
                f"{schedule[index]!r} < sample_sigmas[{index + 1}]={schedule[index + 1]!r}."
            )
    steps = schedule[:-1] if len(schedule) > 1 and schedule[-1] == 0.0 else schedule
    last = len(steps) - 1
    if last == 0 or sigma >= steps[0]:
        return 0.0
    if sigma <= steps[-1]:
        return 1.0
    for index in range(last):
        upper, lower = steps[index], steps[index + 1]
        if sigma == upper:
            return index / last
        if lower < sigma < upper:
            fraction = 1.0 if math.isinf(upper) else (upper - sigma) / (upper - lower)
            return (index + fraction) / last
    return 1.0  # unreachable for a validated schedule: sigma == steps[-1] is handled above
