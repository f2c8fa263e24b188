"""Reference Conditioning: say, per conditioning, whether its pass sees the reference.

Whether a guider pass sees the reference is a property of its conditioning (docs/ARCHITECTURE.md,
"Who sees the reference"). Without this node a positive conditioning sees it and a negative one sees it
only when Apply's ``uncond_sees_reference`` is on. Phantom-style three-pass guidance with core's
``DualCFGGuider`` needs a *negative-text* conditioning that sees the reference (``cond2``), which is
what this node makes.
"""

from __future__ import annotations

import node_helpers
from comfy_api.latest import io

from .finite_inputs import finite_float_inputs
from .patch import SEES_REFERENCE_KEY


def mark_sees_reference(conditioning, sees_reference: bool):
    """A copy of ``conditioning`` whose every entry carries ``SEES_REFERENCE_KEY``."""
    return node_helpers.conditioning_set_values(conditioning, {SEES_REFERENCE_KEY: bool(sees_reference)})


@finite_float_inputs
class CustomVideoXReferenceConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXReferenceConditioning",
            display_name="CustomVideoX Reference Conditioning",
            category="CustomVideoX",
            description=(
                "Marks a conditioning as seeing (or not seeing) the reference subject, for any guider. "
                "For Phantom's three-pass guidance with Dual CFG Guider: cond1 = positive, cond2 = the "
                "negative prompt marked 'sees reference', negative = the negative prompt; cfg_conds = text "
                "guidance (7.5), cfg_cond2_negative = image guidance (5.0), style regular."
            ),
            inputs=[
                io.Conditioning.Input("conditioning"),
                io.Boolean.Input(
                    "sees_reference",
                    default=True,
                    tooltip="On: this conditioning's pass attends to the reference frames. Off: the pass "
                    "runs without them (exactly the base model).",
                ),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, conditioning, sees_reference: bool) -> io.NodeOutput:
        return io.NodeOutput(mark_sees_reference(conditioning, sees_reference))
