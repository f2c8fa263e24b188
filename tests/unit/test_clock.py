"""The one clock: sigma → percent of the model's time (ComfyUI's start/end percent), and step spans."""

from __future__ import annotations

import math

import pytest
import torch

from customvideox_core.clock import (
    ClockSpan,
    next_sigma,
    percent_of_sigma,
    schedule_spans,
    step_span,
)

SHIFT = 5.0


def flow_percent_to_sigma(percent: float) -> float:
    """ComfyUI's ModelSamplingDiscreteFlow.percent_to_sigma with shift 5 (Wan), written out."""
    if percent <= 0.0:
        return 1.0
    if percent >= 1.0:
        return 0.0
    t = 1.0 - percent
    return SHIFT * t / (1 + (SHIFT - 1) * t)


def flow_percent(sigma: float) -> float:
    """Its closed-form inverse (the oracle): t = σ / (shift − (shift − 1) σ), percent = 1 − t."""
    return 1.0 - sigma / (SHIFT - (SHIFT - 1) * sigma)


LOG_LOW, LOG_HIGH = math.log(0.03), math.log(150.0)


def ddpm_percent_to_sigma(percent: float) -> float:
    """A DDPM-like log-linear sigma over the timesteps (CogVideoX-style range), with ComfyUI's end values."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return math.exp(LOG_LOW + (LOG_HIGH - LOG_LOW) * (1.0 - percent))


def ddpm_percent(sigma: float) -> float:
    return 1.0 - (math.log(sigma) - LOG_LOW) / (LOG_HIGH - LOG_LOW)


@pytest.mark.parametrize("percent", [0.001, 0.1, 0.37, 0.5, 0.83, 0.999])
def test_percent_of_sigma_inverts_flow_and_ddpm_percent_to_sigma(percent: float) -> None:
    sigma = flow_percent_to_sigma(percent)
    assert percent_of_sigma(sigma, flow_percent_to_sigma) == pytest.approx(flow_percent(sigma), abs=1e-12)
    sigma = ddpm_percent_to_sigma(percent)
    assert percent_of_sigma(sigma, ddpm_percent_to_sigma) == pytest.approx(ddpm_percent(sigma), abs=1e-12)


def test_percent_of_sigma_ends() -> None:
    assert percent_of_sigma(1.0, flow_percent_to_sigma) == 0.0
    assert percent_of_sigma(math.inf, ddpm_percent_to_sigma) == 0.0  # zero-terminal-SNR first sigma
    assert percent_of_sigma(0.0, flow_percent_to_sigma) == 1.0
    assert percent_of_sigma(0.0, ddpm_percent_to_sigma) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        percent_of_sigma(math.nan, flow_percent_to_sigma)


def flow_schedule(steps: int) -> list[float]:
    """ComfyUI's "simple" scheduler on a flow model: sigmas at evenly spaced percents, then 0."""
    return [flow_percent_to_sigma(index / steps) for index in range(steps)] + [0.0]


def test_simple_flow_schedule_steps_cover_equal_stretches() -> None:
    spans = schedule_spans(torch.tensor(flow_schedule(6), dtype=torch.float64), flow_percent_to_sigma)
    bounds = [bound for span in spans for bound in (span.start, span.end)]
    expected = [bound for index in range(6) for bound in (index / 6, (index + 1) / 6)]
    assert bounds == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("split", [1, 3, 5])
def test_split_schedule_reads_the_same_clock_as_one_run(split: int) -> None:
    """KSamplerAdvanced's steps 0..split and split..6 of one schedule: every call's span is one run's."""
    schedule = flow_schedule(6)
    whole = schedule_spans(schedule, flow_percent_to_sigma)
    first = schedule_spans(schedule[: split + 1], flow_percent_to_sigma)
    second = schedule_spans(schedule[split:], flow_percent_to_sigma)
    assert first + second == whole


def test_step_span_of_a_mid_step_call_and_of_a_call_outside_sampling() -> None:
    schedule = [1.0, 0.8, 0.5, 0.0]
    assert next_sigma(0.8, schedule) == 0.5
    assert next_sigma(0.65, schedule) == 0.5  # a midpoint call covers to the next entry
    assert next_sigma(0.5, [1.0, 0.5]) == 0.5  # nothing below: the schedule stops there
    span = step_span(0.65, schedule, flow_percent_to_sigma)
    assert (span.start, span.end) == pytest.approx((flow_percent(0.65), flow_percent(0.5)), abs=1e-12)
    assert step_span(0.65, None, flow_percent_to_sigma) == ClockSpan.point(span.start)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [([1.0, math.nan, 0.0], r"sample_sigmas\[1\]"), ([1.0, -0.5], r"sample_sigmas\[1\]")],
)
def test_bad_schedules_are_refused(schedule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step_span(1.0, schedule, flow_percent_to_sigma)


def test_clock_span_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        ClockSpan(0.6, 0.4)
    with pytest.raises(ValueError, match="finite"):
        ClockSpan(math.nan, 1.0)
