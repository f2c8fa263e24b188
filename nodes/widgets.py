"""Widgets several nodes declare alike, written once; each node keeps its own tooltip wording."""

from __future__ import annotations

from comfy_api.latest import io

from ..customvideox_core.constants import SIZE_STEP, TEMPORAL_COMPRESSION
from ..customvideox_core.ranges import Bounds
from .types import ERAEType, TABType


def float_input(
    name: str, default: float, bounds: Bounds, tooltip: str, *, optional: bool = False
) -> io.Float.Input:
    """A FLOAT widget ``name`` starting at ``default`` within ``bounds``."""
    return io.Float.Input(
        name,
        default=default,
        min=bounds.low,
        max=bounds.high,
        step=bounds.step,
        round=bounds.round,
        optional=optional,
        tooltip=tooltip,
    )


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


def length_input(*, max_frames: int, tooltip: str) -> io.Int.Input:
    """``length`` in frames, 49 by default: 1 + 4k, as the video VAEs compress time 4×."""
    return io.Int.Input(
        "length", default=49, min=1, max=max_frames, step=TEMPORAL_COMPRESSION, tooltip=tooltip
    )


def bias_inputs(
    *,
    tab: str = "From TimeAwareBias; default: parabolic, peak 1.",
    erae: str = "From ERAEMask; default: no entity enhancement.",
) -> list[io.Input]:
    """The optional ``tab`` (TimeAwareBias) and ``erae`` (ERAEMask) sockets of the nodes that patch a model,
    with the node's own tooltips; the defaults say what ``settings.patch_model`` does without them."""
    return [
        TABType.Input("tab", optional=True, tooltip=tab),
        ERAEType.Input("erae", optional=True, tooltip=erae),
    ]


def uncond_input(*, default: bool, tooltip: str) -> io.Boolean.Input:
    """The ``uncond_sees_reference`` switch: whether the negative (uncond) pass sees the reference too."""
    return io.Boolean.Input("uncond_sees_reference", default=default, tooltip=tooltip)


def patched_model_output() -> io.Model.Output:
    """The MODEL output of the nodes that return a patched clone."""
    return io.Model.Output(tooltip="A patched copy of the model (the input stays untouched).")


def model_input(
    tooltip: str = "From Load CustomVideoX (or any supported CogVideoX/Wan model).",
) -> io.Model.Input:
    """The MODEL input of the nodes that take CustomVideoX's supported hosts (the default tooltip: of the
    nodes that patch them)."""
    return io.Model.Input("model", tooltip=tooltip)
