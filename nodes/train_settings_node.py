"""CustomVideoXTrainSettings: a training run's LoRA shape, optimiser, schedule and memory settings as one
value for Train Adapter's ``settings`` input (so the Train Adapter node shows data and files only).

The widgets are written once (:func:`training_inputs`): this node declares them, and Train Adapter keeps
the same widgets, marked deprecated, for graphs saved before this node existed.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..customvideox_core.constants import SEED_MAX
from .train_run import TrainSettings
from .types import TrainSettingsType

DEPRECATED_NOTE = "Deprecated here (kept for saved graphs); used only when `settings` is not connected. "


def training_inputs(note: str = "") -> list[io.Input]:
    """The settings' widgets in Train Adapter's order; ``note`` opens every tooltip."""
    return [
        io.Int.Input("rank", default=64, min=1, max=1024, tooltip=f"{note}LoRA rank."),
        io.Float.Input(
            "alpha",
            default=64.0,
            min=0.01,
            max=4096.0,
            step=0.01,
            tooltip=f"{note}LoRA alpha (scale alpha/rank).",
        ),
        io.Float.Input("dropout", default=0.0, min=0.0, max=0.9, step=0.01, tooltip=f"{note}LoRA dropout."),
        io.Int.Input("steps", default=1000, min=1, max=1_000_000, tooltip=f"{note}Optimizer steps to train."),
        io.Float.Input(
            "learning_rate",
            default=1e-4,
            min=1e-7,
            max=1.0,
            step=1e-7,
            tooltip=f"{note}AdamW learning rate (reached after the warmup).",
        ),
        io.Int.Input(
            "warmup_steps",
            default=50,
            min=0,
            max=100_000,
            tooltip=f"{note}Linear learning-rate warmup steps.",
        ),
        io.Int.Input(
            "batch_size",
            default=1,
            min=1,
            max=256,
            tooltip=f"{note}Samples per optimizer step (accumulated one by one: memory of one sample).",
        ),
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=SEED_MAX,
            control_after_generate=False,
            tooltip=f"{note}Seed of the LoRA init, the noise and the item order.",
        ),
        io.Int.Input(
            "save_every",
            default=250,
            min=0,
            max=1_000_000,
            tooltip=f"{note}Save the adapter every N steps (0: only at the end); the last step is always saved.",
        ),
        io.Boolean.Input(
            "gradient_checkpointing",
            default=True,
            tooltip=f"{note}Recompute each block in the backward pass: far less memory, about 30% slower.",
        ),
        io.Boolean.Input(
            "bf16", default=True, tooltip=f"{note}Run forward and backward under bfloat16 autocast."
        ),
    ]


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
    def execute(
        cls,
        rank: int,
        alpha: float,
        dropout: float,
        steps: int,
        learning_rate: float,
        warmup_steps: int,
        batch_size: int,
        seed: int,
        save_every: int,
        gradient_checkpointing: bool,
        bf16: bool,
    ) -> io.NodeOutput:
        settings = TrainSettings(
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            steps=steps,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            batch_size=batch_size,
            seed=seed,
            save_every=save_every,
            gradient_checkpointing=gradient_checkpointing,
            bf16=bf16,
        )
        return io.NodeOutput(settings)
