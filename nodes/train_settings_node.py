"""CustomVideoXTrainSettings: a training run's LoRA shape, optimiser, schedule and memory settings as one
value for Train Adapter's ``settings`` input (so the Train Adapter node shows data and files only).

The widgets are written once (:func:`training_inputs`): this node declares them, and Train Adapter keeps
the same widgets, marked deprecated, for graphs saved before this node existed. Their defaults are the
:class:`TrainSettings` dataclass's.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..customvideox_core.constants import SEED_MAX
from .finite_inputs import finite_float_inputs
from .train_settings import TrainSettings
from .types import TrainSettingsType

DEPRECATED_NOTE = "Deprecated here (kept for saved graphs); used only when `settings` is not connected. "


_WIDGETS: tuple[tuple[type, str, dict, str], ...] = (
    (io.Int, "rank", {"min": 1, "max": 1024}, "LoRA rank."),
    (
        io.Float,
        "alpha",
        {"min": 0.01, "max": 4096.0, "step": 0.01},
        "LoRA alpha (scale alpha/rank).",
    ),
    (io.Float, "dropout", {"min": 0.0, "max": 0.9, "step": 0.01}, "LoRA dropout."),
    (io.Int, "steps", {"min": 1, "max": 1_000_000}, "Optimizer steps to train."),
    (
        io.Float,
        "learning_rate",
        {"min": 1e-7, "max": 1.0, "step": 1e-7},
        "AdamW learning rate (reached after the warmup).",
    ),
    (io.Int, "warmup_steps", {"min": 0, "max": 100_000}, "Linear learning-rate warmup steps."),
    (
        io.Int,
        "batch_size",
        {"min": 1, "max": 256},
        "Samples per optimizer step (accumulated one by one: memory of one sample).",
    ),
    (
        io.Int,
        "seed",
        {"min": 0, "max": SEED_MAX, "control_after_generate": False},
        "Seed of the LoRA init, the noise and the item order.",
    ),
    (
        io.Int,
        "save_every",
        {"min": 0, "max": 1_000_000},
        "Save the adapter every N steps (0: only at the end); the last step is always saved.",
    ),
    (
        io.Boolean,
        "gradient_checkpointing",
        {},
        "Recompute each block in the backward pass: far less memory, about 30% slower.",
    ),
    (io.Boolean, "bf16", {}, "Run forward and backward under bfloat16 autocast."),
)
"""The settings' widgets, in Train Adapter's order: (input class, name, options, tooltip); the default of
each is :class:`TrainSettings`'s."""


def training_inputs(note: str = "") -> list[io.Input]:
    """The settings' widgets; ``note`` opens every tooltip (Train Adapter's copies say deprecated)."""
    defaults = TrainSettings()
    return [
        kind.Input(name, default=getattr(defaults, name), **options, tooltip=f"{note}{tooltip}")
        for kind, name, options, tooltip in _WIDGETS
    ]


@finite_float_inputs
class CustomVideoXTrainSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXTrainSettings",
            display_name="CustomVideoX Train Settings",
            category="CustomVideoX",
            description=(
                "LoRA shape, optimiser, schedule and memory settings of a Train Adapter run, in one place. "
                "Connect the output to Train Adapter's `settings` input; it overrides that node's own "
                "(deprecated) widgets for these values."
            ),
            inputs=training_inputs(),
            outputs=[TrainSettingsType.Output("settings", tooltip="For CustomVideoX Train Adapter.")],
        )

    @classmethod
    def execute(cls, **settings) -> io.NodeOutput:
        """``settings``: the widgets above, by name."""
        return io.NodeOutput(TrainSettings(**settings))
