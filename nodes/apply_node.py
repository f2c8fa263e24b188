"""Apply: the reference patch as MODEL → MODEL, for KSampler, SamplerCustomAdvanced or any sampler."""

from __future__ import annotations

from comfy_api.latest import io

from ..customvideox_core.host_specs import PREFIX_FRAMES_INPUT
from .finite_inputs import finite_float_inputs
from .patch_model import patch_model
from .types import ReferenceType
from .widgets import bias_inputs, model_input, patched_model_output, uncond_input

MAX_PREFIX_FRAMES = 64
"""The most reference frames in front of the video Apply takes (WanVaceToVideo puts one there)."""


@finite_float_inputs
class CustomVideoXApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXApply",
            display_name="CustomVideoX Apply",
            category="CustomVideoX",
            description=(
                "Adds the reference subject to a model so that any sampler (KSampler, SamplerCustomAdvanced…) "
                "generates it. The sampled latent holds the video frames only. With no reference connected "
                "it biases the reference frames the conditioning carries (Phantom-Wan via "
                "WanPhantomSubjectToVideo, or VACE's reference with reference_prefix_frames)."
            ),
            inputs=[
                model_input(),
                ReferenceType.Input(
                    "reference",
                    optional=True,
                    tooltip="From CustomVideoX ReferenceEncode. Leave it unconnected to bias the reference "
                    "frames the conditioning already carries (WanPhantomSubjectToVideo's positive, or VACE's "
                    "reference: see reference_prefix_frames).",
                ),
                *bias_inputs(),
                uncond_input(
                    default=False,
                    tooltip="Off: the negative pass runs without the reference. On: both see it. With no "
                    "reference connected the conditioning decides: every pass that carries the frames "
                    "(Phantom's, VACE's) attends to them and is biased.",
                ),
                io.Int.Input(
                    PREFIX_FRAMES_INPUT,
                    default=0,
                    min=0,
                    max=MAX_PREFIX_FRAMES,
                    optional=True,
                    tooltip="VACE: connect WanVaceToVideo's trim_latent (the reference frames it puts in "
                    "front of the video), with no reference connected here, to bias that reference. "
                    "0 on every other model.",
                ),
            ],
            outputs=[patched_model_output()],
        )

    @classmethod
    def execute(
        cls,
        model,
        reference=None,
        uncond_sees_reference: bool = False,
        tab=None,
        erae=None,
        reference_prefix_frames: int = 0,
    ) -> io.NodeOutput:
        return io.NodeOutput(
            patch_model(
                model,
                reference,
                tab,
                erae,
                uncond_sees_reference,
                allow_host_reference=True,
                prefix_frames=reference_prefix_frames,
            )
        )
