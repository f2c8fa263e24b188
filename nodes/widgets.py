"""Widgets several nodes declare alike, written once."""

from __future__ import annotations

from comfy_api.latest import io

from ..customvideox_core.constants import SIZE_STEP


def size_inputs(*, max_size: int, noun: str = "Video", width_note: str = "") -> list[io.Input]:
    """``width`` (720) and ``height`` (480) in pixels, multiples of ``SIZE_STEP``."""
    return [
        io.Int.Input(
            name,
            default=default,
            min=16,
            max=max_size,
            step=SIZE_STEP,
            tooltip=f"{noun} {name} in pixels{width_note if name == 'width' else ''}.",
        )
        for name, default in (("width", 720), ("height", 480))
    ]
