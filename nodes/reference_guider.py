"""Reference Guider: Phantom's three-pass guidance as a GUIDER, its scales and image window on the one clock.

``ReferenceGuider`` is core ``DualCFGGuider``'s guider (``Guider_DualCFG``, "regular" style) with the
scales of the step read from :class:`~customvideox_core.guidance.ReferenceGuidance`
at the stretch of the model's time the step covers. A pass that the step's scales do not need is not run
(``calc_cond_batch`` skips an absent conditioning): outside the image window the pass without the reference,
and where both scales are 1 also the negative pass with it. Sample's ``guidance = phantom`` builds the same
guider with constant scales.
"""

from __future__ import annotations

from comfy_api.latest import io
from comfy_extras.nodes_custom_sampler import Guider_DualCFG

from ..customvideox_core.clock import step_span
from ..customvideox_core.guidance import GuidanceCurve, ReferenceGuidance
from ..customvideox_core.ranges import GUIDANCE_SCALE, TAB_PROGRESS
from .clock import clock_of
from .conditioning_node import mark_sees_reference
from .finite_inputs import finite_float_inputs
from .widgets import float_input, model_input


class ReferenceGuider(Guider_DualCFG):
    """Core's ``Guider_DualCFG`` ("regular": ``neg + image_cfg · (middle − neg) + cfg · (pos − middle)``,
    skipping the passes a scale of 1 does not need) with the scales of each step read from the guidance."""

    def set_guidance(self, guidance: ReferenceGuidance) -> None:
        self.guidance = guidance

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        sample_sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        span = step_span(float(timestep.reshape(-1)[0]), sample_sigmas, clock_of(self.inner_model))
        scales = self.guidance.scales_over(span)
        self.set_cfg(scales.cfg, scales.image_cfg)
        return super().predict_noise(x, timestep, model_options, seed)


def reference_guider(model, positive, negative, guidance: ReferenceGuidance, negative_without_reference=None):
    """The guider over ``positive`` (sees the reference), ``negative`` with the reference (the middle pass)
    and ``negative_without_reference`` (default: ``negative`` without the reference).

    Who sees the pack's own reference is marked on each conditioning; conditionings that carry the host's
    own reference frames (core's ``WanPhantomSubjectToVideo``: its ``negative_text`` and
    ``negative_img_text``) carry it in their frames, and the marks change nothing for them.
    """
    blind = negative if negative_without_reference is None else negative_without_reference
    guider = ReferenceGuider(model)
    guider.set_conds(
        mark_sees_reference(positive, True),
        mark_sees_reference(negative, True),
        mark_sees_reference(blind, False),
    )
    guider.set_guidance(guidance)
    return guider


@finite_float_inputs
class CustomVideoXReferenceGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXReferenceGuider",
            display_name="CustomVideoX Reference Guider",
            category="CustomVideoX",
            description=(
                "Phantom's three-pass guidance for SamplerCustomAdvanced: neg + image_cfg·(neg_ref − neg) + "
                "cfg·(pos − neg_ref). cfg and image_cfg may change over the model's time (per-step lists); "
                "outside the image window, and where a scale is 1, the passes it does not need are not run."
            ),
            inputs=[
                model_input("The model (Phantom-Wan, or one patched by CustomVideoX Apply)."),
                io.Conditioning.Input("positive", tooltip="The prompt; its pass sees the reference."),
                io.Conditioning.Input(
                    "negative",
                    tooltip="The negative prompt. Its pass with the reference is the image term's base; its pass "
                    "without the reference is the image term's negative (WanPhantomSubjectToVideo: negative_text).",
                ),
                float_input("cfg", 7.5, GUIDANCE_SCALE, "Text guidance: cfg·(pos − neg_ref) (Phantom: 7.5)."),
                float_input(
                    "image_cfg",
                    5.0,
                    GUIDANCE_SCALE,
                    "Reference guidance inside the image window (Phantom: 5.0).",
                ),
                float_input(
                    "image_start",
                    0.0,
                    TAB_PROGRESS,
                    "Where the image term starts, in percent of the model's time (0 = pure noise), like "
                    "ControlNet's start_percent.",
                ),
                float_input(
                    "image_end",
                    1.0,
                    TAB_PROGRESS,
                    "Where the image term ends (1 = clean). Outside the window the pass without the "
                    "reference is not run (image_cfg 1).",
                ),
                io.String.Input(
                    "cfg_steps",
                    default="",
                    optional=True,
                    tooltip="Optional per-step cfg, e.g. 3, 3, 1, 1, 1, 1: the values split the model's time "
                    "evenly (one per step with the simple scheduler); empty = the cfg widget.",
                ),
                io.String.Input(
                    "image_cfg_steps",
                    default="",
                    optional=True,
                    tooltip="Optional per-step image_cfg, split like cfg_steps; empty = the image_cfg widget.",
                ),
                io.Conditioning.Input(
                    "negative_without_reference",
                    optional=True,
                    tooltip="The pass without the reference, when it is its own conditioning "
                    "(WanPhantomSubjectToVideo: negative_img_text); default: negative without the reference.",
                ),
            ],
            outputs=[io.Guider.Output(tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive,
        negative,
        cfg: float,
        image_cfg: float,
        image_start: float,
        image_end: float,
        cfg_steps: str = "",
        image_cfg_steps: str = "",
        negative_without_reference=None,
    ) -> io.NodeOutput:
        guidance = ReferenceGuidance(
            GuidanceCurve.parse(cfg_steps or "", cfg, "cfg_steps", "cfg"),
            GuidanceCurve.parse(image_cfg_steps or "", image_cfg, "image_cfg_steps", "image_cfg"),
            image_start,
            image_end,
        )
        return io.NodeOutput(
            reference_guider(model, positive, negative, guidance, negative_without_reference)
        )
