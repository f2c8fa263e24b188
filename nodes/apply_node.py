"""Apply: the reference patch as MODEL → MODEL, for KSampler, SamplerCustomAdvanced or any sampler."""

from __future__ import annotations

from comfy_api.latest import io

from .settings import patch_model
from .widgets import reference_inputs


class CustomVideoXApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXApply",
            display_name="CustomVideoX Apply",
            category="CustomVideoX",
            description=(
                "Adds the reference subject to a model so that any sampler (KSampler, SamplerCustomAdvanced…) "
                "generates it. The sampled latent holds the video frames only."
            ),
            inputs=[
                io.Model.Input(
                    "model", tooltip="From Load CustomVideoX (or any supported CogVideoX/Wan model)."
                ),
                *reference_inputs(),
                io.Boolean.Input(
                    "uncond_sees_reference",
                    default=False,
                    tooltip="Off: the negative pass runs without the reference. On: both see it.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="A patched copy of the model (the input stays untouched).")],
        )

    @classmethod
    def execute(cls, model, reference, uncond_sees_reference: bool, tab=None, erae=None) -> io.NodeOutput:
        return io.NodeOutput(patch_model(model, reference, tab, erae, uncond_sees_reference))
