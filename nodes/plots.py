"""Small pictures drawn on nodes (Pillow, which ComfyUI ships)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 512, 256
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 16, 28, 32
BACKGROUND = (250, 250, 250)
AXIS = (90, 90, 90)
GRID = (220, 220, 220)
LINE = (220, 80, 30)


LEFT, RIGHT = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
TOP, BOTTOM = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
"""The plot area's edges in pixels, the same for every plot."""


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    return image, ImageDraw.Draw(image)


def _y_axis(low: float, high: float) -> Callable[[float], float]:
    """Value → pixel row, ``low`` at the bottom of the plot area and ``high`` at its top."""
    return lambda value: BOTTOM - (value - low) / (high - low) * (BOTTOM - TOP)


def _labelled(
    image: Image.Image,
    draw: ImageDraw.ImageDraw,
    *,
    title: str,
    y_range: tuple[str, str],
    x_range: tuple[str, str],
    x_high_width: int,
    x_label: str,
) -> torch.Tensor:
    """Draw the title and axis labels (``y_range``/``x_range``: low and high text; the high x text is
    ``x_high_width`` pixels left of the right edge); the picture → IMAGE ``[1, HEIGHT, WIDTH, 3]`` in 0..1."""
    draw.text((LEFT, 6), title, fill=AXIS)
    draw.text((4, TOP - 4), y_range[1], fill=AXIS)
    draw.text((4, BOTTOM - 8), y_range[0], fill=AXIS)
    draw.text((LEFT, BOTTOM + 8), x_range[0], fill=AXIS)
    draw.text((RIGHT - x_high_width, BOTTOM + 8), x_range[1], fill=AXIS)
    draw.text(((LEFT + RIGHT) // 2 - 40, BOTTOM + 8), x_label, fill=AXIS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


def plot_curve(values: Sequence[float], *, title: str, x_label: str) -> torch.Tensor:
    """Line plot of ``values`` (evenly spaced over [0, 1]) → IMAGE ``[1, HEIGHT, WIDTH, 3]`` in 0..1."""
    image, draw = _canvas()
    low = min(0.0, *values)
    high = max(0.0, *values)
    if high - low < 1e-9:
        high = low + 1.0
    to_y = _y_axis(low, high)
    for fraction in (0.25, 0.5, 0.75):
        x = LEFT + fraction * (RIGHT - LEFT)
        draw.line([(x, TOP), (x, BOTTOM)], fill=GRID)
    draw.line([(LEFT, to_y(0.0)), (RIGHT, to_y(0.0))], fill=GRID, width=1)
    draw.rectangle([LEFT, TOP, RIGHT, BOTTOM], outline=AXIS)
    count = max(len(values) - 1, 1)
    points = [(LEFT + i / count * (RIGHT - LEFT), to_y(v)) for i, v in enumerate(values)]
    if len(points) == 1:
        points = [points[0], (RIGHT, points[0][1])]
    draw.line(points, fill=LINE, width=3)
    return _labelled(
        image,
        draw,
        title=title,
        y_range=(f"{low:.2f}", f"{high:.2f}"),
        x_range=("0", "1"),
        x_high_width=8,
        x_label=x_label,
    )


SERIES_COLOURS = ((220, 80, 30), (40, 110, 200), (40, 160, 80), (150, 60, 170))


def _runs(points: Sequence[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """The unbroken stretches of ``points`` (``None`` = a gap)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            runs.append([])
        else:
            runs[-1].append(point)
    return [run for run in runs if run]


def plot_series(
    series: Mapping[str, Sequence[float | None]], *, x_values: Sequence[int], title: str, x_label: str
) -> torch.Tensor:
    """Several lines over the same ``x_values`` (e.g. frame indices) with a legend → IMAGE ``[1, H, W, 3]``.

    The y axis spans the values (at least a 0.01 range); a value of ``None`` is a gap in its line (e.g. a
    frame without a face); a point without neighbours is drawn as a dot.
    """
    if not series or not x_values:
        raise ValueError("plot_series needs at least one series and one x value")
    image, draw = _canvas()
    everything = [v for values in series.values() for v in values if v is not None]
    if not everything:
        raise ValueError("plot_series needs at least one value that is not None")
    low, high = min(everything), max(everything)
    if high - low < 0.01:
        low, high = low - 0.005, high + 0.005
    to_y = _y_axis(low, high)
    x_low, x_high = min(x_values), max(x_values)
    x_span = max(x_high - x_low, 1)

    def to_x(value: float) -> float:
        return LEFT + (value - x_low) / x_span * (RIGHT - LEFT)

    for fraction in (0.25, 0.5, 0.75):
        y = TOP + fraction * (BOTTOM - TOP)
        draw.line([(LEFT, y), (RIGHT, y)], fill=GRID)
    draw.rectangle([LEFT, TOP, RIGHT, BOTTOM], outline=AXIS)
    legend_x = LEFT + 4
    for index, (label, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        xs = list(x_values)[-len(values) :] if len(values) < len(x_values) else list(x_values)
        points = [None if v is None else (to_x(x), to_y(v)) for x, v in zip(xs, values, strict=False)]
        for run in _runs(points):
            if len(run) == 1:
                x, y = run[0]
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            else:
                draw.line(run, fill=colour, width=2)
        draw.text((legend_x, BOTTOM - 14), label, fill=colour)
        legend_x += 8 * len(label) + 16
    return _labelled(
        image,
        draw,
        title=title,
        y_range=(f"{low:.3f}", f"{high:.3f}"),
        x_range=(str(x_low), str(x_high)),
        x_high_width=16,
        x_label=x_label,
    )
