"""TAB schedules against hand-computed values, and their means over stretches of the clock against a float64
numeric integral."""

import math

import pytest

from customvideox_core.clock import ClockSpan
from customvideox_core.tab import TAB_VALUE_LIMIT, TABSchedule, step_progresses

PROGRESS_POINTS = (0.0, 0.25, 0.5, 1.0)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # floor + (peak - floor) * 4 s (1 - s): 0.5 + 1.5 * {0, 0.75, 1, 0}
        (TABSchedule("parabolic", peak=2.0, floor=0.5), (0.5, 1.625, 2.0, 0.5)),
        (TABSchedule(), (0.0, 0.75, 1.0, 0.0)),
        (TABSchedule("parabolic", peak=-1.0), (0.0, -0.75, -1.0, 0.0)),
        (TABSchedule("constant", peak=0.7), (0.7, 0.7, 0.7, 0.7)),
        (TABSchedule("linear", peak=1.0, floor=0.0), (1.0, 0.75, 0.5, 0.0)),
        (TABSchedule("linear", peak=-2.0, floor=2.0), (-2.0, -1.0, 0.0, 2.0)),
        # values at s = 0, 0.5, 1: (0, 1, 0.5)
        (TABSchedule("custom", values=(0.0, 1.0, 0.5)), (0.0, 0.5, 1.0, 0.5)),
        (TABSchedule("custom", values=(0.3,)), (0.3, 0.3, 0.3, 0.3)),
    ],
)
def test_full_window_values(schedule: TABSchedule, expected: tuple[float, ...]) -> None:
    for progress, value in zip(PROGRESS_POINTS, expected, strict=True):
        assert schedule.value_at(progress) == pytest.approx(value, abs=1e-12)
    assert schedule.curve(PROGRESS_POINTS) == pytest.approx(list(expected), abs=1e-12)


def test_parabolic_window_uses_global_progress() -> None:
    schedule = TABSchedule("parabolic", peak=1.0, floor=0.0, start=0.3, end=0.8)
    assert schedule.value_at(0.25) == 0.0
    assert schedule.value_at(0.3) == pytest.approx(4 * 0.3 * 0.7)  # not 0: s is not window-normalised
    assert schedule.value_at(0.5) == pytest.approx(1.0)
    assert schedule.value_at(0.8) == pytest.approx(4 * 0.8 * 0.2)
    assert schedule.value_at(0.81) == 0.0
    assert schedule.value_at(1.0) == 0.0


def test_constant_window() -> None:
    schedule = TABSchedule("constant", peak=0.7, start=0.25, end=0.5)
    assert schedule.curve(PROGRESS_POINTS) == [0.0, 0.7, 0.7, 0.0]


def test_linear_window_runs_from_peak_at_start_to_floor_at_end() -> None:
    schedule = TABSchedule("linear", peak=2.0, floor=0.0, start=0.5, end=1.0)
    assert schedule.curve((0.25, 0.5, 0.75, 1.0)) == pytest.approx([0.0, 2.0, 1.0, 0.0])


def test_zero_width_window() -> None:
    linear = TABSchedule("linear", peak=3.0, floor=1.0, start=0.5, end=0.5)
    assert linear.value_at(0.5) == 3.0
    assert linear.value_at(0.49) == 0.0
    custom = TABSchedule("custom", values=(4.0, 5.0), start=0.5, end=0.5)
    assert custom.value_at(0.5) == 4.0


def test_custom_values_spread_over_window_and_interpolated() -> None:
    schedule = TABSchedule("custom", values=(1.0, 3.0), start=0.2, end=0.6)
    assert schedule.value_at(0.1) == 0.0
    assert schedule.value_at(0.2) == pytest.approx(1.0)
    assert schedule.value_at(0.4) == pytest.approx(2.0)
    assert schedule.value_at(0.5) == pytest.approx(2.5)
    assert schedule.value_at(0.6) == pytest.approx(3.0)
    assert schedule.value_at(0.7) == 0.0
    five = TABSchedule("custom", values=(0.0, 4.0, -4.0, 2.0, 2.0))  # knots at 0, .25, .5, .75, 1
    assert five.value_at(0.125) == pytest.approx(2.0)
    assert five.value_at(0.375) == pytest.approx(0.0)
    assert five.value_at(0.625) == pytest.approx(-1.0)
    assert five.value_at(0.9) == pytest.approx(2.0)


def test_custom_values_accept_a_list_and_are_stored_as_tuple() -> None:
    schedule = TABSchedule("custom", values=[0, 1])  # type: ignore[arg-type]
    assert schedule.values == (0.0, 1.0)
    hash(schedule)  # frozen and hashable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": "cosine"}, "Unknown TAB shape 'cosine'"),
        ({"peak": math.nan}, "peak must be a finite"),
        ({"floor": math.inf}, "floor must be a finite"),
        ({"start": math.nan}, "start must be a finite"),
        ({"shape": "custom", "values": (0.0, math.nan, 1.0)}, "index 1 must be finite"),
        ({"shape": "custom", "values": (math.inf,)}, "index 0 must be finite"),
        ({"start": -0.1}, r"start must lie in \[0, 1\]"),
        ({"end": 1.5}, r"end must lie in \[0, 1\]"),
        ({"start": 0.7, "end": 0.2}, "inverted"),
        ({"shape": "custom"}, "needs at least one value"),
        ({"shape": "parabolic", "values": (1.0,)}, "only used by shape 'custom'"),
        ({"peak": 20.5}, r"peak must lie in \[-20, 20\]"),
        ({"floor": -1e30}, r"floor must lie in \[-20, 20\]"),
        ({"shape": "custom", "values": (0.0, 1e30)}, r"custom value at index 1 must lie in \[-20, 20\]"),
    ],
)
def test_validation_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TABSchedule(**kwargs)


def test_value_at_rejects_progress_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"finite number in \[0, 1\]"):
        TABSchedule().value_at(1.5)
    with pytest.raises(ValueError, match="percent_of_sigma"):
        TABSchedule().value_at(math.nan)


def test_step_progresses() -> None:
    assert step_progresses(1) == [0.0]
    assert step_progresses(2) == [0.0, 1.0]
    assert step_progresses(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert TABSchedule().curve(step_progresses(5)) == pytest.approx([0.0, 0.75, 1.0, 0.75, 0.0])
    with pytest.raises(ValueError, match="positive integer"):
        step_progresses(0)


def test_every_value_shares_the_one_limit() -> None:
    """peak, floor and custom values accept exactly the same range (issue 21, case 11)."""
    edge = TAB_VALUE_LIMIT
    TABSchedule(peak=edge, floor=-edge)
    TABSchedule("custom", values=(-edge, edge))
    for kwargs in ({"peak": edge + 1e-9}, {"shape": "custom", "values": (edge + 1e-9,)}):
        with pytest.raises(ValueError, match="must lie in"):
            TABSchedule(**kwargs)


def numeric_mean(schedule: TABSchedule, start: float, end: float, points: int = 200_001) -> float:
    """The oracle: float64 composite trapezoid rule of b(s) sampled on a fine grid over [start, end]. Its
    error is below 1e-5 here (a jump of b at a window edge costs at most jump · grid step / 2)."""
    width = (end - start) / (points - 1)
    values = [schedule.value_at(min(end, start + index * width)) for index in range(points)]
    return (
        math.fsum([0.5 * (a + b) for a, b in zip(values, values[1:], strict=False)]) * width / (end - start)
    )


NUMERIC_TOLERANCE = 3e-5
SHAPES = [
    TABSchedule(),
    TABSchedule(peak=3.0, floor=-1.0, start=0.2, end=0.9),
    TABSchedule("constant", peak=2.0, start=0.1, end=0.55),
    TABSchedule("linear", peak=4.0, floor=0.5, start=0.25, end=0.8),
    TABSchedule("custom", values=(0.0, 2.0, -1.0, 3.0), start=0.05, end=0.95),
    TABSchedule("custom", values=(1.5,), start=0.3, end=0.6),
]


@pytest.mark.parametrize("schedule", SHAPES, ids=lambda s: s.shape)
@pytest.mark.parametrize(("start", "end"), [(0.0, 1.0), (0.0, 0.5), (0.13, 0.37), (0.5, 1.0), (0.52, 0.97)])
def test_mean_over_a_span_is_the_integral_of_the_curve(schedule, start: float, end: float) -> None:
    """mean_over is checked against a float64 numeric integral, window edges and knots inside the span."""
    expected = numeric_mean(schedule, start, end)
    assert schedule.mean_over(ClockSpan(start, end)) == pytest.approx(expected, abs=NUMERIC_TOLERANCE)


def test_mean_over_a_point_is_the_value_there() -> None:
    schedule = TABSchedule(peak=2.0)
    assert schedule.mean_over(ClockSpan.point(0.25)) == schedule.value_at(0.25) == pytest.approx(1.5)


def test_two_step_parabolic_run_acts() -> None:
    """Two steps cover [0, 0.5] and [0.5, 1]: the parabola's mean over each half is 2/3 of the peak (the old
    point clock read b(0) = b(1) = 0 and did nothing)."""
    schedule = TABSchedule(peak=3.0)
    assert schedule.mean_over(ClockSpan(0.0, 0.5)) == pytest.approx(2.0)
    assert schedule.mean_over(ClockSpan(0.5, 1.0)) == pytest.approx(2.0)


@pytest.mark.parametrize("schedule", SHAPES, ids=lambda s: s.shape)
def test_bias_summed_over_a_run_does_not_depend_on_the_step_count(schedule) -> None:
    """Steps of a run tile its time: sum(mean · length) is the curve's integral for 4, 8 and 50 steps."""
    totals = []
    for steps in (4, 8, 50):
        edges = [index / steps for index in range(steps + 1)]
        spans = [ClockSpan(a, b) for a, b in zip(edges, edges[1:], strict=False)]
        totals.append(math.fsum(schedule.mean_over(span) * span.length for span in spans))
    assert totals == pytest.approx([numeric_mean(schedule, 0.0, 1.0)] * 3, abs=NUMERIC_TOLERANCE)


def test_zero_width_window_has_no_time() -> None:
    schedule = TABSchedule("constant", peak=2.0, start=0.5, end=0.5)
    assert schedule.mean_over(ClockSpan(0.25, 0.75)) == 0.0
    assert schedule.mean_over(ClockSpan.point(0.5)) == 2.0
