"""Small pictures drawn on nodes (Pillow, which ComfyUI ships)."""

from __future__ import annotations

from collections.abc import Sequence

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
