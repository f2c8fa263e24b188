"""ERAEMask: entity words + strength + threshold (+ reference mask) → ERAE settings."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..customvideox_core.entity_tokens import find_entity_positions, split_entity_words
from ..customvideox_core.erae import ERAEConfig
from .tokens import prompt_pieces
from .types import ERAESettings, ERAEType


class CustomVideoXERAEMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXERAEMask",
            display_name="CustomVideoX ERAEMask",
            category="CustomVideoX",
            description=(
                "Entity region-aware enhancement (ERAE): raises the reference bias on the video regions the "
                "model links to the subject's words in the prompt, and on the subject inside the reference mask."
            ),
            inputs=[
                io.Clip.Input(
                    "clip", tooltip="The text encoder of the video model; only its tokenizer is used."
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="",
                    tooltip="The positive prompt, exactly as given to the text encoder.",
                ),
                io.String.Input(
                    "entity_words",
                    default="",
                    tooltip="Words of the prompt that name the subject, comma-separated (e.g. dog).",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="γ: how much the entity region raises the bias (0 = off).",
                ),
                io.Float.Input(
                    "threshold",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="0 = soft entity map; above 0 = binary region where the map ≥ threshold.",
                ),
                io.Boolean.Input(
                    "block_outside_mask",
                    default=False,
                    tooltip="Hide the reference tokens outside the subject mask from every query.",
                ),
                io.Mask.Input(
                    "reference_mask",
                    optional=True,
                    tooltip="Subject mask for the reference image (1 = subject), same size as the "
                    "reference image; replaces ReferenceEncode's mask.",
                ),
            ],
            outputs=[ERAEType.Output("erae", tooltip="ERAE settings, for Sample or Apply.")],
        )

    @classmethod
    def execute(
        cls,
        clip,
        prompt: str,
        entity_words: str,
        strength: float,
        threshold: float,
        block_outside_mask: bool,
        reference_mask=None,
    ) -> io.NodeOutput:
        words = split_entity_words(entity_words)
        if not words:
            raise ValueError("entity_words is empty: write the word(s) of the prompt that name the subject")
        positions = find_entity_positions(prompt_pieces(clip, prompt), words)
        config = ERAEConfig(
            entity_positions=positions,
            gamma=strength,
            threshold=threshold,
            block_outside_mask=block_outside_mask,
        )
        if reference_mask is not None:
            mask = reference_mask.reshape(-1, *reference_mask.shape[-2:]).clamp(0, 1)
            return io.NodeOutput(ERAESettings(config, mask), ui=ui.PreviewMask(mask, cls=cls))
        text = f"entity tokens at {list(positions)}; reference mask: ReferenceEncode's (all ones if none)"
        return io.NodeOutput(ERAESettings(config, None), ui=ui.PreviewText(text))
