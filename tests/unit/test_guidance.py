"""Reference guidance scales on the one clock: the windowed image term against a naive float64 integral,
per-step lists and pass counts against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from customvideox_core.clock import ClockSpan
from customvideox_core.guidance import GuidanceCurve, GuidanceScales, ReferenceGuidance


def naive_mean(function, start: float, end: float, points: int = 100_000) -> float:
    """The oracle: float64 midpoint rule (a step function's jumps cost at most jump / points)."""
    width = (end - start) / points
    return math.fsum(function(start + (index + 0.5) * width) for index in range(points)) / points


def step_function(values, window=(0.0, 1.0), outside=None):
    def function(percent: float) -> float:
        if outside is not None and not window[0] <= percent <= window[1]:
            return outside
        return values[min(int(percent * len(values)), len(values) - 1)]

    return function


def test_constant_scales_are_returned_exactly() -> None:
    guidance = ReferenceGuidance.constant(7.5, 5.0)
    for span in (ClockSpan(0.0, 1.0 / 3.0), ClockSpan(0.123, 0.789), ClockSpan.point(0.4)):
        assert guidance.scales_over(span) == GuidanceScales(7.5, 5.0)


def test_per_step_values_give_one_value_per_even_step() -> None:
    curve = GuidanceCurve.parse("3, 3, 1, 1, 1, 1", 7.5, "cfg_steps")
    assert [curve.value_for(ClockSpan(k / 6, (k + 1) / 6)) for k in range(6)] == [3, 3, 1, 1, 1, 1]


@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (0.1, 0.45), (0.3, 0.31), (0.62, 0.97), (0.5, 0.55)])
def test_the_image_term_is_the_mean_over_the_span_of_the_windowed_scale(start: float, end: float) -> None:
    """image_cfg inside [0.2, 0.6] and 1 outside: a step gets its mean (the oracle: a float64 integral)."""
    guidance = ReferenceGuidance(GuidanceCurve.constant(2.0), GuidanceCurve.constant(5.0), 0.2, 0.6)
    scales = guidance.scales_over(ClockSpan(start, end))
    image = step_function((5.0,), window=(0.2, 0.6), outside=1.0)
    assert scales.image_cfg == pytest.approx(naive_mean(image, start, end), abs=1e-4)
    assert scales.cfg == 2.0


def test_a_step_edge_a_hair_off_the_window_edge_does_not_switch_the_image_pass() -> None:
    """float32 sigmas put a step meant to start at 0.4 at 0.39999998: no pass for a 2e-8 overlap."""
    guidance = ReferenceGuidance(GuidanceCurve.constant(3.0), GuidanceCurve.constant(5.0), 0.0, 0.4)
    assert guidance.scales_over(ClockSpan(0.39999998, 0.5)) == GuidanceScales(3.0, 1.0)
    assert guidance.scales_over(ClockSpan(0.3, 0.40000002)) == GuidanceScales(3.0, 5.0)


def test_a_step_a_hair_off_the_list_gets_the_listed_value() -> None:
    """ComfyUI's simple scheduler puts step 2 of 6 at 0.333 (its 1000-entry table), not 1/3: still cfg 1,
    exactly, so the pass is skipped."""
    curve = GuidanceCurve.parse("3, 3, 1, 1, 1, 1", 7.5, "cfg_steps")
    assert curve.value_for(ClockSpan(0.333, 0.5)) == 1.0
    assert curve.value_for(ClockSpan(0.166, 0.333)) == 3.0


@pytest.mark.parametrize(
    ("cfg", "image_cfg", "passes"),
    [(7.5, 5.0, 3), (3.0, 1.0, 2), (1.0, 1.0, 1), (1.0, 2.0, 3), (1.0 + 1e-12, 1.0, 1)],
)
def test_passes_follow_cores_cfg_1_rule(cfg: float, image_cfg: float, passes: int) -> None:
    assert GuidanceScales(cfg, image_cfg).passes == passes


def test_outside_the_window_the_image_term_is_off() -> None:
    guidance = ReferenceGuidance.constant(3.0, 5.0)
    windowed = ReferenceGuidance(guidance.cfg, guidance.image_cfg, 0.0, 0.4)
    assert windowed.scales_over(ClockSpan(0.5, 0.6)) == GuidanceScales(3.0, 1.0)
    assert windowed.scales_over(ClockSpan(0.5, 0.6)).passes == 2
    assert windowed.scales_over(ClockSpan(0.0, 0.2)) == GuidanceScales(3.0, 5.0)
    assert windowed.scales_over(ClockSpan(0.3, 0.5)).image_cfg == pytest.approx(3.0)  # half inside: mean
    with_list = ReferenceGuidance(GuidanceCurve((4.0, 2.0)), GuidanceCurve((5.0, 3.0)), 0.0, 1.0)
    assert with_list.scales_over(ClockSpan(0.6, 0.8)) == GuidanceScales(2.0, 3.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [("3, x", "cfg_steps item 2: 'x' is not a number"), ("1, 1e30", r"item 2 is 1e\+30"), ("-1", "item 1")],
)
def test_bad_per_step_lists_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GuidanceCurve.parse(text, 1.0, "cfg_steps")


def test_an_empty_list_is_the_constant() -> None:
    assert GuidanceCurve.parse(" , ", 4.0, "cfg_steps") == GuidanceCurve.constant(4.0)


@pytest.mark.parametrize(("start", "end", "message"), [(-0.1, 1.0, "image_start"), (0.7, 0.2, "inverted")])
def test_bad_windows_are_refused(start: float, end: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReferenceGuidance(GuidanceCurve.constant(1.0), GuidanceCurve.constant(1.0), start, end)
