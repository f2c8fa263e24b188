"""TimeAwareBias: the TAB schedule, with its curve drawn on the node."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..customvideox_core.ranges import TAB_LEVEL, TAB_PROGRESS
from ..customvideox_core.tab import TAB_SHAPES, TABSchedule, parse_custom_values, step_progresses
from .finite_inputs import finite_float_inputs
from .plots import plot_curve
from .types import TABType
from .widgets import float_input

PLOT_STEPS = 50
_NUMBERS = (
    ("peak", 1.0, TAB_LEVEL, "Largest bias (added to the attention logit)."),
    ("floor", 0.0, TAB_LEVEL, "Bias at the start and end of the parabola / end of the linear ramp."),
    (
        "start",
        0.0,
        TAB_PROGRESS,
        (
            "Where the bias starts, in percent of the model's time like ControlNet's start_percent "
            "(0 = pure noise)."
        ),
    ),
    (
        "end",
        1.0,
        TAB_PROGRESS,
        ("Where the bias ends, in percent of the model's time like ControlNet's end_percent (1 = clean)."),
    ),
)
"""The schedule's number widgets: (name, default, range, tooltip)."""


@finite_float_inputs
class CustomVideoXTimeAwareBias(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXTimeAwareBias",
            display_name="CustomVideoX TimeAwareBias",
            category="CustomVideoX",
            description=(
                "Time-aware attention bias (TAB): how strongly video tokens attend to the reference over the "
                "denoising steps. parabolic (default) = low at the start and end, peak in the middle; "
                "constant = the paper's fixed-bias baseline. Added to the attention logits; negative weakens."
            ),
            inputs=[
                io.Combo.Input(
                    "shape",
                    options=list(TAB_SHAPES),
                    default="parabolic",
                    tooltip="parabolic: floor + (peak − floor)·4s(1−s); constant: peak; linear: peak → "
                    "floor; custom: your values spread over the window.",
                ),
                *(float_input(name, default, bounds, tooltip) for name, default, bounds, tooltip in _NUMBERS),
                io.String.Input(
                    "custom_values",
                    default="",
                    multiline=False,
                    tooltip="For shape=custom: comma-separated bias values, e.g. 0, 1, 2, 1, 0, each within "
                    f"±{TAB_LEVEL.high:g} like peak.",
                ),
            ],
            outputs=[TABType.Output("tab", tooltip="The schedule, for Sample or Apply.")],
        )

    @classmethod
    def execute(
        cls, shape: str, peak: float, floor: float, start: float, end: float, custom_values: str
    ) -> io.NodeOutput:
        values = parse_custom_values(custom_values) if shape == "custom" else ()
        schedule = TABSchedule(shape=shape, peak=peak, floor=floor, start=start, end=end, values=values)
        curve = schedule.curve(step_progresses(PLOT_STEPS))
        image = plot_curve(
            curve, title=f"TAB ({shape}) over the model's time", x_label="model time (percent)"
        )
        return io.NodeOutput(schedule, ui=ui.PreviewImage(image, cls=cls))
