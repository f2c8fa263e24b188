"""TAB schedules and sampling progress against hand-computed values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.tab import TABSchedule, sampling_progress, step_progresses

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
    ],
)
def test_validation_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TABSchedule(**kwargs)


def test_value_at_rejects_progress_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"finite number in \[0, 1\]"):
        TABSchedule().value_at(1.5)
    with pytest.raises(ValueError, match="sampling_progress"):
        TABSchedule().value_at(math.nan)


def test_step_progresses() -> None:
    assert step_progresses(1) == [0.0]
    assert step_progresses(2) == [0.0, 1.0]
    assert step_progresses(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert TABSchedule().curve(step_progresses(5)) == pytest.approx([0.0, 0.75, 1.0, 0.75, 0.0])
    with pytest.raises(ValueError, match="positive integer"):
        step_progresses(0)


FLOW_SCHEDULE = [1.0, 0.9, 0.75, 0.5, 0.25, 0.0]  # Wan-like: 5 steps and the end marker


def test_progress_on_flow_schedule() -> None:
    for index, sigma in enumerate(FLOW_SCHEDULE[:-1]):
        assert sampling_progress(sigma, FLOW_SCHEDULE) == pytest.approx(index / 4)
    assert sampling_progress(0.625, FLOW_SCHEDULE) == pytest.approx(2.5 / 4)  # halfway from .75 to .5
    assert sampling_progress(0.8, FLOW_SCHEDULE) == pytest.approx((1 + 0.1 / 0.15) / 4)
    assert sampling_progress(1.5, FLOW_SCHEDULE) == 0.0
    assert sampling_progress(0.1, FLOW_SCHEDULE) == 1.0  # below the last step's sigma
    assert sampling_progress(0.0, FLOW_SCHEDULE) == 1.0


def _karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    ramp = [index / (steps - 1) for index in range(steps)]
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(max_inv + r * (min_inv - max_inv)) ** rho for r in ramp] + [0.0]


def test_progress_on_ddpm_karras_schedule_as_float32_tensor() -> None:
    schedule = torch.tensor(_karras(10, 0.03, 156.0), dtype=torch.float32)
    for index in range(10):
        sigma = schedule[index].item()
        assert sampling_progress(sigma, schedule) == pytest.approx(index / 9)
    # DPM2 evaluates at the geometric mean of two neighbouring sigmas: strictly between the two steps.
    upper, lower = schedule[3].item(), schedule[4].item()
    middle = math.sqrt(upper * lower)
    expected = (3 + (upper - middle) / (upper - lower)) / 9
    assert sampling_progress(middle, schedule) == pytest.approx(expected)
    assert 3 / 9 < expected < 4 / 9


def test_progress_hand_computed_mid_steps() -> None:
    schedule = [100.0, 50.0, 10.0, 0.0]  # 3 steps: s = 0, .5, 1
    assert sampling_progress(75.0, schedule) == pytest.approx(0.25)
    assert sampling_progress(30.0, schedule) == pytest.approx(0.75)
    assert sampling_progress(10.0, schedule) == 1.0
    assert sampling_progress(5.0, schedule) == 1.0


def test_progress_without_trailing_zero_and_one_step() -> None:
    assert sampling_progress(2.0, [3.0, 2.0, 1.0]) == pytest.approx(0.5)
    assert sampling_progress(1.0, [3.0, 2.0, 1.0]) == 1.0
    assert sampling_progress(14.6, [14.6, 0.0]) == 0.0
    assert sampling_progress(3.0, [14.6, 0.0]) == 0.0
    assert sampling_progress(0.5, [0.5]) == 0.0


def test_progress_with_infinite_first_sigma() -> None:
    schedule = [math.inf, 100.0, 10.0, 0.0]
    assert sampling_progress(math.inf, schedule) == 0.0
    assert sampling_progress(100.0, schedule) == pytest.approx(0.5)
    assert sampling_progress(1.0e6, schedule) == pytest.approx(0.5)  # limit of interpolation toward +inf
    assert sampling_progress(55.0, schedule) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([], "empty"),
        ([1.0, 2.0, 0.0], r"descending.*sample_sigmas\[0\]"),
        ([1.0, math.nan, 0.0], r"sample_sigmas\[1\]"),
        ([1.0, -0.5], r"sample_sigmas\[1\]"),
        (torch.ones(2, 2), "one-dimensional"),
    ],
)
def test_progress_rejects_bad_schedules(schedule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sampling_progress(0.5, schedule)


def test_progress_rejects_nan_sigma() -> None:
    with pytest.raises(ValueError, match="NaN"):
        sampling_progress(math.nan, FLOW_SCHEDULE)


@st.composite
def descending_schedules(draw) -> list[float]:
    values = draw(st.lists(st.floats(0.001, 200.0, allow_nan=False), min_size=1, max_size=12, unique=True))
    schedule = sorted(values, reverse=True)
    if draw(st.booleans()):
        schedule.append(0.0)
    return schedule


@settings(max_examples=60, deadline=None)
@given(descending_schedules(), st.floats(0.0, 250.0), st.floats(0.0, 250.0))
def test_progress_is_monotonic_and_bounded(schedule: list[float], sigma_a: float, sigma_b: float) -> None:
    high, low = max(sigma_a, sigma_b), min(sigma_a, sigma_b)
    progress_high = sampling_progress(high, schedule)
    progress_low = sampling_progress(low, schedule)
    assert 0.0 <= progress_high <= progress_low <= 1.0


@settings(max_examples=40, deadline=None)
@given(descending_schedules())
def test_progress_is_exact_on_schedule_entries(schedule: list[float]) -> None:
    steps = schedule[:-1] if len(schedule) > 1 and schedule[-1] == 0.0 else schedule
    for index, sigma in enumerate(steps):
        expected = 0.0 if len(steps) == 1 else index / (len(steps) - 1)
        assert sampling_progress(sigma, schedule) == pytest.approx(expected, abs=1e-12)
