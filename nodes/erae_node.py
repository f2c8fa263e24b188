"""ERAEMask: entity words + strength + threshold (+ reference mask) → ERAE settings."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..customvideox_core.entity_tokens import find_entity_positions, split_entity_words
from ..customvideox_core.erae import ERAEConfig, SubjectWords, parse_subject_words
from ..customvideox_core.ranges import ERAE_STRENGTH, ERAE_THRESHOLD
from ..customvideox_core.reference import subject_masks
from .finite_inputs import finite_float_inputs
from .tokens import prompt_pieces
from .types import ERAESettings, ERAEType
from .widgets import float_input

logger = logging.getLogger(__name__)


@finite_float_inputs
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
                float_input(
                    "strength",
                    1.0,
                    ERAE_STRENGTH,
                    "γ: how much the entity region raises the bias (0 = off).",
                ),
                float_input(
                    "threshold",
                    0.0,
                    ERAE_THRESHOLD,
                    "0 = soft entity map; above 0 = binary region where the map ≥ threshold.",
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
                io.String.Input(
                    "subject_words",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Several subjects: bind words of the prompt to single reference images, one "
                    "line (or ';'-separated item) per image, 'N: words' with N the image number, e.g. "
                    "'1: dog' and '2: cat'. ERAE then raises the dog's regions toward image 1 only and the "
                    "cat's toward image 2. Images without a line use entity_words. Empty = one subject.",
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
        subject_words: str = "",
    ) -> io.NodeOutput:
        words = split_entity_words(entity_words)
        bindings = parse_subject_words(subject_words or "")
        if not words and not bindings:
            raise ValueError(
                "entity_words is empty: write the word(s) of the prompt that name the subject "
                "(or bind words to reference images in subject_words)"
            )
        pieces = prompt_pieces(clip, prompt)
        positions = find_entity_positions(pieces, words) if words else ()
        subjects = tuple(
            SubjectWords(image, find_entity_positions(pieces, split_entity_words(text)))
            for image, text in bindings
        )
        config = ERAEConfig(
            entity_positions=positions,
            gamma=strength,
            threshold=threshold,
            block_outside_mask=block_outside_mask,
            subjects=subjects,
        )
        mask, note = (None, None)
        if reference_mask is not None:
            mask, note = subject_masks(
                reference_mask.reshape(-1, *reference_mask.shape[-2:]),
                invert=False,
                instead="ReferenceEncode's mask is used",
            )
        if note:
            logger.warning("CustomVideoX ERAEMask: reference_mask: %s", note)
        if mask is not None:
            mask = mask.clamp(0, 1)
            return io.NodeOutput(ERAESettings(config, mask), ui=ui.PreviewMask(mask, cls=cls))
        text = f"entity tokens at {list(positions)}; reference mask: ReferenceEncode's (all ones if none)"
        if note:
            text = f"reference_mask: {note} {text}"
        for subject in subjects:
            text += f"; image {subject.reference_frame + 1}: tokens {list(subject.entity_positions)}"
        return io.NodeOutput(ERAESettings(config, None), ui=ui.PreviewText(text))
