"""One clock: where a model call sits on the model's own time scale, and the stretch of time its step covers.

Every time-aware control of the pack (TAB and its window, the reference guider's scales and window) reads
progress on ComfyUI's ``start_percent`` / ``end_percent`` scale, the one ControlNet and hooks use: percent
``p`` in ``[0, 1]`` is the point of the model's own timestep range where ``model_sampling.percent_to_sigma(p)``
is the current sigma (0 = pure noise, 1 = clean). Unlike "the step's place in the sampler's schedule", this
scale does not depend on which sampler runs which steps, so a schedule split over several samplers (Wan 2.2's
two experts, KSamplerAdvanced's start/end steps) reads the same clock as one sampler.

A model call at ``sigma`` covers the stretch from ``sigma`` to the next lower sigma of the sampler's schedule
(:func:`step_span`); the controls apply their curve's mean over that :class:`ClockSpan`, so a run with few
steps gets the amount the curve intends (the spans of a run tile its time, so ``sum(mean · length)`` is the
curve's integral whatever the step count).

ComfyUI has ``percent_to_sigma`` but no inverse; :func:`percent_of_sigma` inverts any non-increasing
``percent_to_sigma`` by bisection, so every model sampling (DDPM sigmas of CogVideoX, shifted flow of Wan)
gets the same treatment. Torch-free: sigmas come in as floats or duck-typed tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PercentToSigma = Callable[[float], float]
"""``model_sampling.percent_to_sigma``: percent in ``[0, 1]`` → sigma, non-increasing."""

BISECTION_STEPS = 60
"""Halvings of ``[0, 1]`` in :func:`percent_of_sigma`: ``2**-60`` is below float64 resolution near 1."""


@dataclass(frozen=True)
class ClockSpan:
    """The stretch ``[start, end]`` of the clock (percent, ``0 <= start <= end <= 1``) one model call covers;
    ``start == end`` is a single point (a call outside a sampling, or the last point of a schedule)."""

    start: float
    end: float

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ClockSpan {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(
                f"ClockSpan must satisfy 0 <= start <= end <= 1 (percent of the model's time), got "
                f"[{self.start!r}, {self.end!r}]"
            )

    @classmethod
    def point(cls, percent: float) -> ClockSpan:
        return cls(percent, percent)

    @property
    def length(self) -> float:
        return self.end - self.start


def percent_of_sigma(sigma: float, percent_to_sigma: PercentToSigma) -> float:
    """The percent ``p`` at which ``percent_to_sigma(p) == sigma`` (the inverse of ComfyUI's
    ``model_sampling.percent_to_sigma``): 0 for a sigma at or above the model's largest, 1 for sigma 0.

    ``percent_to_sigma`` must be non-increasing in ``p``; where it is flat (a float32 step) the middle of the
    flat stretch is returned. The same ``sigma`` always gives the same percent (bisection is deterministic),
    which is what makes a split schedule read exactly the same clock as one run.
    """
    sigma = float(sigma)
    if math.isnan(sigma) or sigma < 0.0:
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    if sigma >= float(percent_to_sigma(0.0)):
        return 0.0
    if sigma <= float(percent_to_sigma(1.0)):
        return 1.0
    low, high = 0.0, 1.0  # percent_to_sigma(low) > sigma >= percent_to_sigma(high)
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if float(percent_to_sigma(middle)) > sigma:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def schedule_floats(sample_sigmas: Sequence[float] | Any) -> list[float]:
    """A sequence of numbers or a 1-D tensor (duck-typed) → floats; raises on a multi-dimensional tensor or
    a NaN or negative entry."""
    if hasattr(sample_sigmas, "detach"):
        if sample_sigmas.ndim > 1:
            raise ValueError(
                f"sample_sigmas must be one-dimensional (the sampler's sigma schedule), got shape "
                f"{tuple(sample_sigmas.shape)}."
            )
        sample_sigmas = sample_sigmas.detach().cpu().double().reshape(-1).tolist()
    schedule = [float(value) for value in sample_sigmas]
    for index, value in enumerate(schedule):
        if math.isnan(value) or value < 0.0:
            raise ValueError(
                f"sample_sigmas[{index}] is {value!r}; sigmas must be non-negative numbers. Check the "
                "scheduler that produced the schedule."
            )
    return schedule


def next_sigma(sigma: float, sample_sigmas: Sequence[float] | Any) -> float:
    """The first sigma of the (descending) schedule below ``sigma``: where the step that starts at ``sigma``
    ends. ``sigma`` itself when none is below (a schedule that stops short of 0 ends there)."""
    below = [value for value in schedule_floats(sample_sigmas) if value < sigma]
    return max(below) if below else float(sigma)


def step_span(
    sigma: float, sample_sigmas: Sequence[float] | Any | None, percent_to_sigma: PercentToSigma
) -> ClockSpan:
    """The :class:`ClockSpan` of a model call at ``sigma``: from ``sigma`` to the schedule's next lower sigma,
    in percent of the model's time. Without a schedule (a call outside a sampler): the point of ``sigma``.

    A sampler that evaluates mid-step (Heun's second call, DPM2's midpoint) covers from that sigma to the
    next schedule entry.
    """
    start = percent_of_sigma(sigma, percent_to_sigma)
    if sample_sigmas is None:
        return ClockSpan.point(start)
    end = percent_of_sigma(next_sigma(sigma, sample_sigmas), percent_to_sigma)
    return ClockSpan(start, max(start, end))


def schedule_spans(sample_sigmas: Sequence[float] | Any, percent_to_sigma: PercentToSigma) -> list[ClockSpan]:
    """The span of every step of a schedule (each entry but the last starts one step)."""
    sigmas = schedule_floats(sample_sigmas)
    return [step_span(sigma, sigmas, percent_to_sigma) for sigma in sigmas[:-1]]


__all__ = [
    "BISECTION_STEPS",
    "ClockSpan",
    "PercentToSigma",
    "next_sigma",
    "percent_of_sigma",
    "schedule_floats",
    "schedule_spans",
    "step_span",
]
