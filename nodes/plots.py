"""Small pictures drawn on nodes (Pillow, which ComfyUI ships)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 512, 256
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 16, 28, 32
BACKGROUND = (250, 250, 250)
AXIS = (90, 90, 90)
GRID = (220, 220, 220)
LINE = (220, 80, 30)


def plot_curve(values: Sequence[float], *, title: str, x_label: str) -> torch.Tensor:
    """Line plot of ``values`` (evenly spaced over [0, 1]) → IMAGE ``[1, HEIGHT, WIDTH, 3]`` in 0..1."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    low = min(0.0, *values)
    high = max(0.0, *values)
    if high - low < 1e-9:
        high = low + 1.0
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def to_y(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    for fraction in (0.25, 0.5, 0.75):
        x = left + fraction * (right - left)
        draw.line([(x, top), (x, bottom)], fill=GRID)
    draw.line([(left, to_y(0.0)), (right, to_y(0.0))], fill=GRID, width=1)
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    count = max(len(values) - 1, 1)
    points = [(left + i / count * (right - left), to_y(v)) for i, v in enumerate(values)]
    if len(points) == 1:
        points = [points[0], (right, points[0][1])]
    draw.line(points, fill=LINE, width=3)
    draw.text((left, 6), title, fill=AXIS)
    draw.text((4, top - 4), f"{high:.2f}", fill=AXIS)
    draw.text((4, bottom - 8), f"{low:.2f}", fill=AXIS)
    draw.text((left, bottom + 8), "0", fill=AXIS)
    draw.text((right - 8, bottom + 8), "1", fill=AXIS)
    draw.text(((left + right) // 2 - 40, bottom + 8), x_label, fill=AXIS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


SERIES_COLOURS = ((220, 80, 30), (40, 110, 200), (40, 160, 80), (150, 60, 170))


def plot_series(
    series: Mapping[str, Sequence[float]], *, x_values: Sequence[int], title: str, x_label: str
) -> torch.Tensor:
    """Several lines over the same ``x_values`` (e.g. frame indices) with a legend → IMAGE ``[1, H, W, 3]``.

    The y axis spans the values (at least a 0.01 range); a series of one value is drawn as a dot.
    """
    if not series or not x_values:
        raise ValueError("plot_series needs at least one series and one x value")
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    everything = [v for values in series.values() for v in values]
    low, high = min(everything), max(everything)
    if high - low < 0.01:
        low, high = low - 0.005, high + 0.005
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    x_low, x_high = min(x_values), max(x_values)
    x_span = max(x_high - x_low, 1)

    def to_x(value: float) -> float:
        return left + (value - x_low) / x_span * (right - left)

    def to_y(value: float) -> float:
        return bottom - (value - low) / (high - low) * (bottom - top)

    for fraction in (0.25, 0.5, 0.75):
        y = top + fraction * (bottom - top)
        draw.line([(left, y), (right, y)], fill=GRID)
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    legend_x = left + 4
    for index, (label, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        xs = list(x_values)[-len(values) :] if len(values) < len(x_values) else list(x_values)
        points = [(to_x(x), to_y(v)) for x, v in zip(xs, values, strict=False)]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        else:
            draw.line(points, fill=colour, width=2)
        draw.text((legend_x, bottom - 14), label, fill=colour)
        legend_x += 8 * len(label) + 16
    draw.text((left, 6), title, fill=AXIS)
    draw.text((4, top - 4), f"{high:.3f}", fill=AXIS)
    draw.text((4, bottom - 8), f"{low:.3f}", fill=AXIS)
    draw.text((left, bottom + 8), str(x_low), fill=AXIS)
    draw.text((right - 16, bottom + 8), str(x_high), fill=AXIS)
    draw.text(((left + right) // 2 - 40, bottom + 8), x_label, fill=AXIS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]
